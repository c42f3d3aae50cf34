//! The forward processor: relays a transaction to an upstream CWS endpoint over HTTPS (plain
//! HTTP only when `processor.allow_insecure_upstream` allows it, for development) and hands
//! back the upstream's answer. snapgate still authenticates the terminal and runs the refresh
//! flow; the upstream sees its own session token (if configured) instead of the terminal's.

use crate::cws::error::Error;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;

/// Largest upstream response accepted.
pub const MAX_UPSTREAM_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Forward {
    url: hyper::Uri,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// What the upstream answered.
#[derive(Debug)]
pub struct Upstream {
    pub status: u16,
    pub body: Bytes,
}

impl Forward {
    /// `ca_file`: the CA(s) the upstream's certificate must chain to (PEM); None: Mozilla's
    /// root set. Whether plain http:// is allowed is config validation's call.
    pub fn new(url: &str, timeout: Duration, ca_file: Option<&Path>) -> Result<Self, String> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| format!("processor.upstream_url {url:?}: {e}"))?;
        if !matches!(url.scheme_str(), Some("https" | "http")) || url.host().is_none() {
            return Err("processor.upstream_url must be an https:// URL with a host".into());
        }
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match ca_file {
            Some(path) => builder.with_tls_config(
                rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots_from(path)?)
                    .with_no_client_auth(),
            ),
            None => builder
                .with_provider_and_webpki_roots(crate::tls::provider())
                .map_err(|e| e.to_string())?,
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Forward {
            url,
            timeout,
            client,
        })
    }

    /// POST an envelope with its SOAPAction and wait (bounded) for the answer.
    pub async fn send(&self, action: &str, envelope: String) -> Result<Upstream, Error> {
        let req = hyper::Request::post(self.url.clone())
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", format!("\"{action}\""))
            .body(Full::new(Bytes::from(envelope)))
            .map_err(|e| Error::Internal(e.to_string()))?;
        let work = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| Error::Upstream(e.to_string()))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_UPSTREAM_BODY)
                .collect()
                .await
                .map_err(|e| Error::Upstream(e.to_string()))?
                .to_bytes();
            Ok(Upstream { status, body })
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| Error::Upstream("timed out".into()))?
    }
}

/// The CA certificates of a PEM file, as the roots to trust.
fn roots_from(path: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let what =
        |e: &dyn std::fmt::Display| format!("processor.upstream_ca_file {}: {e}", path.display());
    let pem = std::fs::read(path).map_err(|e| what(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.map_err(|e| what(&e))?)
            .map_err(|e| what(&e))?;
    }
    if roots.is_empty() {
        return Err(what(&"no certificate in it"));
    }
    Ok(roots)
}
