//! TLS for the SOAP listener: the `[tls]` config section, the rustls acceptor `server::run`
//! wraps every accepted connection in (optionally requiring a client certificate signed by a
//! configured CA: mTLS), and the dev PKI (a CA, a `localhost` server certificate and one client
//! certificate) that `snapgate init --tls` writes. Crypto is rustls with the `ring` provider.

use crate::config::{self, ConfigError};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

pub use crate::config::TlsConfig;

/// The rustls crypto provider everything here uses (ring: no cmake, no C toolchain surprises).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Build the TLS acceptor for `cfg`: TLS 1.2 and 1.3, HTTP/1.1, and with `client_ca_file`
/// a required, verified client certificate. Errors name the file and the problem, never key bytes.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs = load_certs(&cfg.cert_file)?;
    let key = load_key(&cfg.key_file)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match &cfg.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca_file)? {
                roots.add(cert).map_err(|e| {
                    format!("{}: not a usable CA certificate: {e}", ca_file.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| {
                    format!("{}: cannot verify clients with it: {e}", ca_file.display())
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "{} and {}: the key does not fit the certificate ({e})",
            cfg.key_file.display(),
            cfg.cert_file.display()
        )
    })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Every certificate in a PEM file; at least one.
fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_problem(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found (expected a PEM block \"BEGIN CERTIFICATE\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file that only its owner can read.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    config::check_private(path).map_err(|e| match e {
        ConfigError::KeyFileTooOpen { path, mode } => format!(
            "TLS key file {p} is readable by group or others (mode {mode:o}); \
             fix it with: chmod 600 {p}",
            p = path.display()
        ),
        other => other.to_string(),
    })?;
    let text = Zeroizing::new(
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{}: no private key found (expected a PEM block \"BEGIN PRIVATE KEY\", \
             \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\")",
            path.display()
        ),
        e => format!("{}: bad PEM: {}", path.display(), pem_problem(&e)),
    })
}

/// What is wrong with a PEM file, in words that never quote its contents.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a block has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a block is not valid base64",
        pem::Error::NoItemsFound => "no PEM block found",
        pem::Error::SectionTooLarge => "a block is too large",
        _ => "unreadable PEM",
    }
}

// ---------------------------------------------------------------------------------------------
// Dev PKI

/// The files `write_dev_pki` wrote (keys mode 600).
#[derive(Debug, Clone)]
pub struct DevPki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl DevPki {
    fn in_dir(dir: &Path) -> DevPki {
        DevPki {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        }
    }

    /// A `[tls]` section serving the dev server certificate; with `mtls`, clients must present
    /// a certificate from the dev CA.
    pub fn tls_config(&self, mtls: bool) -> TlsConfig {
        TlsConfig {
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
            client_ca_file: mtls.then(|| self.ca_cert.clone()),
        }
    }
}

/// Write a DEV PKI into `dir` (created): a CA, a server certificate for `localhost` and
/// `127.0.0.1`, and one client certificate (for mTLS tests and dev terminals), all signed by
/// the CA, as PEM files. Refuses to overwrite any of them. Never use these in production.
pub fn write_dev_pki(dir: &Path) -> Result<DevPki, ConfigError> {
    let pki = DevPki::in_dir(dir);
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
        path: dir.to_owned(),
        source,
    })?;
    for p in [
        &pki.ca_cert,
        &pki.ca_key,
        &pki.server_cert,
        &pki.server_key,
        &pki.client_cert,
        &pki.client_key,
    ] {
        if p.exists() {
            return Err(ConfigError::Exists(p.clone()));
        }
    }
    let gen_err = |source: rcgen::Error| ConfigError::Write {
        path: dir.to_owned(),
        source: std::io::Error::other(format!("cannot generate the dev certificates: {source}")),
    };
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let params = |cn: &str, names: Vec<String>| -> Result<CertificateParams, rcgen::Error> {
        use chrono::Datelike;
        let year = chrono::Utc::now().year();
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name
            .push(DnType::OrganizationName, "snapgate DEV");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        p.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        Ok(p)
    };

    let ca_key = KeyPair::generate().map_err(gen_err)?;
    let mut ca = params("snapgate DEV CA", Vec::new()).map_err(gen_err)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).map_err(gen_err)?;

    let leaf = |cn: &str, names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate()?;
        let mut p = params(cn, names)?;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &ca, &ca_key)?;
        Ok::<_, rcgen::Error>((cert.pem(), Zeroizing::new(key.serialize_pem())))
    };
    let (server_pem, server_key) = leaf(
        "localhost",
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    )
    .map_err(gen_err)?;
    let (client_pem, client_key) = leaf(
        "snapgate DEV terminal",
        Vec::new(),
        ExtendedKeyUsagePurpose::ClientAuth,
    )
    .map_err(gen_err)?;

    let write_public = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| ConfigError::Write {
            path: path.to_owned(),
            source,
        })
    };
    config::write_private(&pki.ca_key, &Zeroizing::new(ca_key.serialize_pem()))?;
    write_public(&pki.ca_cert, &ca.pem())?;
    config::write_private(&pki.server_key, &server_key)?;
    write_public(&pki.server_cert, &server_pem)?;
    config::write_private(&pki.client_key, &client_key)?;
    write_public(&pki.client_cert, &client_pem)?;
    Ok(pki)
}

/// `snapgate init --tls`: write the dev PKI into `<dir>/tls/` and append a `[tls]` section
/// (server certificate on, client certificates commented out) to `<dir>/snapgate.toml`.
pub fn init_dev_tls(dir: &Path) -> Result<DevPki, ConfigError> {
    let pki = write_dev_pki(&dir.join("tls"))?;
    let cfg_path = dir.join("snapgate.toml");
    let section = "\n# TLS, written by `snapgate init --tls`: a DEV CA and certificates in tls/.\n\
                   # Never use them in production. See docs/TLS.md.\n\
                   [tls]\n\
                   cert_file = \"tls/server.pem\"\n\
                   key_file = \"tls/server-key.pem\"\n\
                   # Uncomment to require client certificates signed by the dev CA (mTLS); a dev\n\
                   # terminal can use tls/client.pem and tls/client-key.pem.\n\
                   # client_ca_file = \"tls/ca.pem\"\n";
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&cfg_path)
        .and_then(|mut f| f.write_all(section.as_bytes()))
        .map_err(|source| ConfigError::Write {
            path: cfg_path,
            source,
        })?;
    Ok(pki)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev_pki() -> (tempfile::TempDir, DevPki) {
        let dir = tempfile::tempdir().unwrap();
        let pki = write_dev_pki(&dir.path().join("tls")).unwrap();
        (dir, pki)
    }

    fn err(cfg: &TlsConfig) -> String {
        match acceptor(cfg) {
            Ok(_) => panic!("acceptor accepted {cfg:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn dev_pki_builds_acceptors_with_and_without_client_certificates() {
        let (_dir, pki) = dev_pki();
        acceptor(&pki.tls_config(false)).unwrap();
        acceptor(&pki.tls_config(true)).unwrap();
        #[cfg(unix)]
        for key in [&pki.ca_key, &pki.server_key, &pki.client_key] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        // Never overwrites.
        assert!(matches!(
            write_dev_pki(pki.ca_cert.parent().unwrap()),
            Err(ConfigError::Exists(_))
        ));
    }

    #[test]
    fn init_tls_writes_a_config_that_loads_with_resolved_paths() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = config::init_dev(dir.path(), "127.0.0.1:0".parse().unwrap()).unwrap();
        init_dev_tls(dir.path()).unwrap();
        let cfg = config::Config::load(&cfg_path).unwrap();
        let tls = cfg.tls.expect("a [tls] section");
        assert_eq!(tls.cert_file, dir.path().join("tls/server.pem"));
        assert_eq!(tls.key_file, dir.path().join("tls/server-key.pem"));
        assert!(tls.client_ca_file.is_none());
        acceptor(&tls).unwrap();
    }

    #[test]
    fn missing_files_are_named() {
        let (dir, pki) = dev_pki();
        let mut cfg = pki.tls_config(true);
        cfg.cert_file = dir.path().join("nope.pem");
        let e = err(&cfg);
        assert!(e.contains("cannot read") && e.contains("nope.pem"), "{e}");
        let mut cfg = pki.tls_config(false);
        cfg.key_file = dir.path().join("nokey.pem");
        let e = err(&cfg);
        assert!(e.contains("cannot read") && e.contains("nokey.pem"), "{e}");
        let mut cfg = pki.tls_config(true);
        cfg.client_ca_file = Some(dir.path().join("noca.pem"));
        let e = err(&cfg);
        assert!(e.contains("cannot read") && e.contains("noca.pem"), "{e}");
    }

    #[test]
    fn garbage_pem_is_refused_clearly_without_quoting_the_key() {
        let (dir, pki) = dev_pki();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "this is not PEM\n").unwrap();
        let mut cfg = pki.tls_config(false);
        cfg.cert_file = garbage.clone();
        let e = err(&cfg);
        assert!(e.contains("no certificate found"), "{e}");
        let mut cfg = pki.tls_config(true);
        cfg.client_ca_file = Some(garbage);
        let e = err(&cfg);
        assert!(e.contains("no certificate found"), "{e}");

        // A key file without a key (here: a certificate).
        let cert_as_key = dir.path().join("cert-as-key.pem");
        let cert_pem = std::fs::read_to_string(&pki.server_cert).unwrap();
        config::write_private(&cert_as_key, &cert_pem).unwrap();
        let mut cfg = pki.tls_config(false);
        cfg.key_file = cert_as_key;
        let e = err(&cfg);
        assert!(e.contains("no private key found"), "{e}");

        // A truncated key: the error must not quote any of it.
        let key_pem = std::fs::read_to_string(&pki.server_key).unwrap();
        let body_line = key_pem.lines().nth(1).unwrap().to_owned();
        let truncated = dir.path().join("truncated-key.pem");
        let cut: String = key_pem.lines().take(2).collect::<Vec<_>>().join("\n");
        config::write_private(&truncated, &cut).unwrap();
        let mut cfg = pki.tls_config(false);
        cfg.key_file = truncated;
        let e = err(&cfg);
        assert!(e.contains("bad PEM") && e.contains("no END line"), "{e}");
        assert!(!e.contains(&body_line[..16]), "{e}");

        // A key that belongs to another certificate.
        let mut cfg = pki.tls_config(false);
        cfg.key_file = pki.client_key.clone();
        let e = err(&cfg);
        assert!(e.contains("does not fit"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, pki) = dev_pki();
        std::fs::set_permissions(&pki.server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = err(&pki.tls_config(false));
        assert!(
            e.contains("readable by group or others") && e.contains("chmod 600"),
            "{e}"
        );
    }
}
