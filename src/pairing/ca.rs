//! The pairing CA: a root (only its certificate on the node) and an issuing intermediate (its
//! certificate and key), loaded from the operator's files or written for development by
//! `snapgate init --tls`. It issues POS client certificates (RSA-2048 keys made here through
//! rcgen's aws-lc-rs backend, or the POS's own key from a CSR) and writes the seed's PEM
//! bundle: PKCS#1 key, client certificate, intermediate, root.

use crate::config::{self, ConfigError};
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the CA's files are (`[pairing]` in the config).
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub root_cert: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

pub struct PairingCa {
    root_pem: String,
    root_der: Vec<u8>,
    ca_pem: String,
    ca_der: Vec<u8>,
    /// The intermediate as rcgen needs it to sign (its name and key identifier).
    issuer: rcgen::Certificate,
    issuer_key: KeyPair,
    /// Keys the setup-code hashes; derived from the intermediate's key, so the database alone
    /// is not enough to search codes.
    code_key: Zeroizing<[u8; 32]>,
}

/// Who a certificate is for.
#[derive(Debug, Clone)]
pub struct Subject {
    pub pos_id: String,
    /// `SERVICEKEY/SERIAL` of the terminal the code was bound to.
    pub terminal: Option<String>,
}

/// A certificate just issued.
pub struct Issued {
    pub pem: String,
    pub serial: String,
    pub fingerprint: [u8; 32],
    pub not_after: DateTime<Utc>,
}

/// The key a certificate certifies: one we made (its private half goes to the POS once) or
/// the POS's own, from its CSR.
pub enum KeySource {
    Generated(KeyPair),
    Csr(Box<CertificateSigningRequestParams>),
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0}")]
    Files(String),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path)
        .map_err(|e| CaError::Files(format!("cannot read {}: {e}", path.display())))
}

fn first_cert_der(path: &Path, pem_text: &str) -> Result<Vec<u8>, CaError> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .next()
        .and_then(|r| r.ok())
        .map(|c| c.to_vec())
        .ok_or_else(|| {
            CaError::Files(format!(
                "{}: no certificate found (expected a PEM block \"BEGIN CERTIFICATE\")",
                path.display()
            ))
        })
}

impl PairingCa {
    /// Load the CA. The intermediate's key file must be mode 600 and must fit its certificate.
    pub fn load(files: &CaFiles) -> Result<PairingCa, CaError> {
        let root_pem = read(&files.root_cert)?;
        let root_der = first_cert_der(&files.root_cert, &root_pem)?;
        let ca_pem = read(&files.ca_cert)?;
        let ca_der = first_cert_der(&files.ca_cert, &ca_pem)?;
        config::check_private(&files.ca_key).map_err(|e| match e {
            ConfigError::KeyFileTooOpen { path, mode } => CaError::Files(format!(
                "pairing CA key file {p} is readable by group or others (mode {mode:o}); \
                 fix it with: chmod 600 {p}",
                p = path.display()
            )),
            other => CaError::Files(other.to_string()),
        })?;
        let key_pem = Zeroizing::new(read(&files.ca_key)?);
        let issuer_key = KeyPair::from_pem(&key_pem).map_err(|_| {
            CaError::Files(format!(
                "{}: no usable private key (expected PEM \"BEGIN PRIVATE KEY\", PKCS#8)",
                files.ca_key.display()
            ))
        })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&ca_der).map_err(|_| {
            CaError::Files(format!(
                "{}: not a readable certificate",
                files.ca_cert.display()
            ))
        })?;
        if parsed.public_key().raw != issuer_key.public_key_der().as_slice() {
            return Err(CaError::Files(format!(
                "{} and {}: the key does not fit the certificate",
                files.ca_key.display(),
                files.ca_cert.display()
            )));
        }
        let params = CertificateParams::from_ca_cert_pem(&ca_pem).map_err(|e| {
            CaError::Files(format!(
                "{}: not a usable CA certificate ({e})",
                files.ca_cert.display()
            ))
        })?;
        let issuer = params.self_signed(&issuer_key)?;
        let mut h = Sha256::new();
        h.update(b"snapgate pairing setup-code key v1\0");
        h.update(Zeroizing::new(issuer_key.serialize_der()).as_slice());
        let code_key = Zeroizing::new(h.finalize().into());
        Ok(PairingCa {
            root_pem: normalise_pem(&root_pem, &root_der),
            root_der,
            ca_pem: normalise_pem(&ca_pem, &ca_der),
            ca_der,
            issuer,
            issuer_key,
            code_key,
        })
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// SHA-256 of the root certificate, hex with colons, as `openssl x509 -fingerprint -sha256`.
    pub fn root_fingerprint(&self) -> String {
        Sha256::digest(&self.root_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    pub fn code_key(&self) -> &[u8; 32] {
        &self.code_key
    }

    /// Issue a client certificate for `who` valid from one minute before `now` for `lifetime`.
    pub fn issue(
        &self,
        who: &Subject,
        key: &KeySource,
        now: DateTime<Utc>,
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "snapgate POS");
        dn.push(DnType::CommonName, who.pos_id.as_str());
        p.distinguished_name = dn;
        let mut sans = vec![uri(&format!("urn:snapgate:pos:{}", urn_part(&who.pos_id)))?];
        if let Some(t) = &who.terminal {
            sans.push(uri(&format!("urn:snapgate:terminal:{}", urn_part(t)))?);
        }
        p.subject_alt_names = sans;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        // 128 random bits with the top bit clear: a positive DER INTEGER of 16 bytes.
        let mut serial = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut serial);
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let not_before = now - Duration::minutes(1);
        let not_after = now + lifetime;
        p.not_before = to_time(not_before)?;
        p.not_after = to_time(not_after)?;
        let cert = match key {
            KeySource::Generated(k) => p.signed_by(k, &self.issuer, &self.issuer_key)?,
            KeySource::Csr(csr) => p.signed_by(&csr.public_key, &self.issuer, &self.issuer_key)?,
        };
        let der = cert.der().to_vec();
        Ok(Issued {
            pem: cert.pem(),
            serial: hex::encode_upper(serial),
            fingerprint: Sha256::digest(&der).into(),
            not_after: DateTime::from_timestamp(not_after.timestamp(), 0).unwrap_or(not_after),
        })
    }

    /// The seed's bundle: the key (when we made it) as PKCS#1, then the client certificate,
    /// the intermediate and the root.
    pub fn bundle(
        &self,
        key: Option<&KeyPair>,
        cert_pem: &str,
    ) -> Result<Zeroizing<String>, CaError> {
        let mut out = Zeroizing::new(String::with_capacity(6000));
        if let Some(k) = key {
            out.push_str(&pkcs1_pem(k)?);
        }
        out.push_str(cert_pem.trim_end());
        out.push('\n');
        out.push_str(&self.ca_pem);
        out.push_str(&self.root_pem);
        Ok(out)
    }
}

/// The first certificate of a PEM file, re-encoded (drops comments and any other blocks).
fn normalise_pem(_text: &str, der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

fn uri(s: &str) -> Result<SanType, CaError> {
    Ok(SanType::URI(s.try_into()?))
}

/// Percent-encode everything but RFC 3986's unreserved characters and `/`.
pub fn urn_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn to_time(t: DateTime<Utc>) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .map_err(|_| CaError::Files("a certificate date is out of range".into()))
}

/// A fresh RSA-2048 key (aws-lc-rs). Tens of milliseconds: call it off the async workers.
pub fn generate_key() -> Result<KeyPair, CaError> {
    Ok(KeyPair::generate_rsa_for(
        &rcgen::PKCS_RSA_SHA256,
        rcgen::RsaKeySize::_2048,
    )?)
}

/// The key as `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1): rcgen writes PKCS#8, whose
/// `PrivateKeyInfo` wraps the PKCS#1 structure in an OCTET STRING; unwrap it.
pub fn pkcs1_pem(key: &KeyPair) -> Result<Zeroizing<String>, CaError> {
    let pkcs8 = Zeroizing::new(key.serialize_der());
    let inner = pkcs8_to_pkcs1(&pkcs8)
        .ok_or_else(|| CaError::Files("the generated key is not an RSA PKCS#8 key".into()))?;
    Ok(Zeroizing::new(pem_block("RSA PRIVATE KEY", inner)))
}

const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The PKCS#1 `RSAPrivateKey` inside an RSA PKCS#8 `PrivateKeyInfo` (RFC 5208 §5).
pub fn pkcs8_to_pkcs1(der: &[u8]) -> Option<&[u8]> {
    let (0x30, info, []) = tlv(der)? else {
        return None;
    };
    let (0x02, version, rest) = tlv(info)? else {
        return None;
    };
    if version != [0] {
        return None;
    }
    let (0x30, alg, rest) = tlv(rest)? else {
        return None;
    };
    let (0x06, oid, _) = tlv(alg)? else {
        return None;
    };
    if oid != RSA_ENCRYPTION_OID {
        return None;
    }
    let (0x04, key, _) = tlv(rest)? else {
        return None;
    };
    Some(key)
}

/// One DER tag-length-value: (tag, contents, what follows).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// Parse and check a PEM CSR (PKCS#10): its self-signature must verify. Its names and
/// extensions are ignored: we decide what the certificate says.
pub fn parse_csr(pem: &str) -> Result<CertificateSigningRequestParams, String> {
    CertificateSigningRequestParams::from_pem(pem)
        .map_err(|_| "csr is not a PEM PKCS#10 request with a valid signature".to_string())
}

/// The files `write_dev_ca` wrote.
#[derive(Debug, Clone)]
pub struct DevCa {
    pub root_cert: PathBuf,
    pub root_key: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
}

impl DevCa {
    pub fn files(&self) -> CaFiles {
        CaFiles {
            root_cert: self.root_cert.clone(),
            ca_cert: self.ca_cert.clone(),
            ca_key: self.ca_key.clone(),
        }
    }
}

/// Write a DEV pairing CA into `dir`: root and intermediate, ECDSA P-256, keys mode 600.
/// Refuses to overwrite. In production the root key stays off the gateway.
pub fn write_dev_ca(dir: &Path) -> Result<DevCa, ConfigError> {
    let out = DevCa {
        root_cert: dir.join("pairing-root.pem"),
        root_key: dir.join("pairing-root-key.pem"),
        ca_cert: dir.join("pairing-ca.pem"),
        ca_key: dir.join("pairing-ca-key.pem"),
    };
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for p in [&out.root_cert, &out.root_key, &out.ca_cert, &out.ca_key] {
        if p.exists() {
            return Err(ConfigError::Exists(p.clone()));
        }
    }
    let gen_err = |source: rcgen::Error| ConfigError::Write {
        path: dir.to_owned(),
        source: std::io::Error::other(format!("cannot generate the pairing CA: {source}")),
    };
    let params = |cn: &str| {
        use chrono::Datelike;
        let year = Utc::now().year();
        let mut p = CertificateParams::default();
        p.distinguished_name
            .push(DnType::OrganizationName, "snapgate DEV pairing");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p
    };
    let root_key = KeyPair::generate().map_err(gen_err)?;
    let mut root = params("snapgate DEV pairing root");
    root.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    let root = root.self_signed(&root_key).map_err(gen_err)?;
    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca = params("snapgate DEV pairing issuing CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.use_authority_key_identifier_extension = true;
    let ca = ca.signed_by(&ca_key, &root, &root_key).map_err(gen_err)?;
    let write_public = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| ConfigError::Write {
            path: path.to_owned(),
            source,
        })
    };
    config::write_private(&out.root_key, &Zeroizing::new(root_key.serialize_pem()))?;
    write_public(&out.root_cert, &root.pem())?;
    config::write_private(&out.ca_key, &Zeroizing::new(ca_key.serialize_pem()))?;
    write_public(&out.ca_cert, &ca.pem())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn dev_ca() -> (tempfile::TempDir, DevCa, PairingCa) {
        let dir = tempfile::tempdir().unwrap();
        let dev = write_dev_ca(dir.path()).unwrap();
        let ca = PairingCa::load(&dev.files()).unwrap();
        (dir, dev, ca)
    }

    #[test]
    fn pkcs1_is_the_octet_string_inside_pkcs8() {
        let key = generate_key().unwrap();
        let pkcs8 = key.serialize_der();
        let inner = pkcs8_to_pkcs1(&pkcs8).unwrap();
        // RSAPrivateKey: SEQUENCE { INTEGER 0, modulus (257 bytes for 2048 bits), ... }
        let (tag, body, rest) = tlv(inner).unwrap();
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (_, version, body) = tlv(body).unwrap();
        assert_eq!(version, [0]);
        let (tag, modulus, _) = tlv(body).unwrap();
        assert_eq!((tag, modulus.len()), (0x02, 257));
        assert!(pkcs1_pem(&key)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        // Not RSA, or not DER: None, not a panic.
        let ec = KeyPair::generate().unwrap();
        assert!(pkcs8_to_pkcs1(&ec.serialize_der()).is_none());
        for cut in [0, 1, 2, 10, pkcs8.len() - 1] {
            assert!(pkcs8_to_pkcs1(&pkcs8[..cut]).is_none());
        }
    }

    #[test]
    fn issued_certificates_carry_names_dates_and_fresh_serials() {
        let (_d, _dev, ca) = dev_ca();
        let now = DateTime::from_timestamp(1_795_000_000, 0).unwrap();
        let who = Subject {
            pos_id: "till 7".into(),
            terminal: Some("SK1/SER 9".into()),
        };
        let key = KeySource::Generated(generate_key().unwrap());
        let a = ca.issue(&who, &key, now, Duration::days(90)).unwrap();
        let b = ca.issue(&who, &key, now, Duration::days(90)).unwrap();
        assert_ne!(a.serial, b.serial);
        assert_eq!(a.serial.len(), 32);
        assert_eq!(a.not_after, now + Duration::days(90));
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(a.pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.validity().not_before.timestamp(), now.timestamp() - 60);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let uris: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        assert!(
            uris.iter().any(|u| u.contains("urn:snapgate:pos:till%207")),
            "{uris:?}"
        );
        assert!(
            uris.iter()
                .any(|u| u.contains("urn:snapgate:terminal:SK1/SER%209")),
            "{uris:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_ca_key_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let (_d, dev, _ca) = dev_ca();
        std::fs::set_permissions(&dev.ca_key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = PairingCa::load(&dev.files()).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn a_key_from_another_ca_is_refused() {
        let (_d, dev, _ca) = dev_ca();
        let other = tempfile::tempdir().unwrap();
        let dev2 = write_dev_ca(other.path()).unwrap();
        let mut files = dev.files();
        files.ca_key = dev2.ca_key;
        let e = PairingCa::load(&files).err().unwrap().to_string();
        assert!(e.contains("does not fit"), "{e}");
    }
}
