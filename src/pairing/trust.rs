//! Trust on the TLS listeners: rustls's WebPKI client verifier over the pairing CA (plus any
//! `tls.client_ca_file`), wrapped so that every handshake also checks the deny list of
//! replaced and revoked certificates. Builds the acceptors for the main (mTLS) listener and
//! the pairing listener (client certificate optional).

use crate::app::App;
use crate::store::pairing::PairingStore;
use crate::tls::TlsConfig;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// WebPKI verification, then the deny list.
pub struct DenyListVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    store: Arc<dyn PairingStore>,
}

impl std::fmt::Debug for DenyListVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenyListVerifier")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for DenyListVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let fingerprint: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // A store read inside the handshake: off the async worker.
        match crate::store::blocking_io(|| self.store.is_denied(&fingerprint)) {
            Ok(false) => Ok(verified),
            Ok(true) => Err(rustls::Error::InvalidCertificate(CertificateError::Revoked)),
            Err(e) => {
                // Fail closed: a certificate we cannot check is not accepted.
                tracing::error!(error = %e, "deny list unreadable; refusing the client certificate");
                Err(rustls::Error::General("deny list unavailable".into()))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The trust anchors: the pairing root and its intermediate (so a POS may send its leaf
/// alone), and the `client_ca_file` certificates if any.
fn roots(app: &App, cfg: &TlsConfig) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca_file) = &cfg.client_ca_file {
        for cert in crate::tls::load_certs(ca_file)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca_file.display()))?;
        }
    }
    if let Some(p) = &app.pairing {
        for der in [p.ca.root_der(), p.ca.ca_der()] {
            roots
                .add(CertificateDer::from(der.to_vec()))
                .map_err(|e| format!("pairing CA: not a usable CA certificate: {e}"))?;
        }
    }
    Ok(roots)
}

fn verifier(
    app: &App,
    cfg: &TlsConfig,
    optional: bool,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let p = app.pairing.as_ref().ok_or("pairing is not configured")?;
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(app, cfg)?),
        crate::tls::provider(),
    );
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let inner = builder
        .build()
        .map_err(|e| format!("cannot verify client certificates: {e}"))?;
    Ok(Arc::new(DenyListVerifier {
        inner,
        store: p.store.clone(),
    }))
}

/// The main listener's acceptor. Without `[pairing]` it is `tls::acceptor`. With it, and with
/// `client_ca_file` set (mTLS on), clients may present certificates of that CA or of the
/// pairing CA, and replaced or revoked pairing certificates are refused.
pub fn main_acceptor(app: &App, cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    if app.pairing.is_none() || cfg.client_ca_file.is_none() {
        return crate::tls::acceptor(cfg);
    }
    crate::tls::acceptor_with(cfg, Some(verifier(app, cfg, false)?))
}

/// The pairing listener's acceptor: the same server certificate, client certificates
/// optional (renewal presents one) and, when given, checked like on the main listener.
pub fn pairing_acceptor(app: &App, cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    crate::tls::acceptor_with(cfg, Some(verifier(app, cfg, true)?))
}

/// The `posId` a pairing certificate names (its CN).
pub fn pos_id_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
