//! The forward processor: relays a transaction to an upstream CWS endpoint over HTTP and hands
//! back the upstream's answer. snapgate still authenticates the terminal and runs the refresh
//! flow; the upstream sees its own session token (if configured) instead of the terminal's.

use crate::cws::error::Error;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Largest upstream response accepted.
pub const MAX_UPSTREAM_BODY: usize = 1 << 20;

#[derive(Clone)]
pub struct Forward {
    url: hyper::Uri,
    timeout: Duration,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// What the upstream answered.
#[derive(Debug)]
pub struct Upstream {
    pub status: u16,
    pub body: Bytes,
}

impl Forward {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let url: hyper::Uri = url
            .parse()
            .map_err(|e| format!("processor.upstream_url {url:?}: {e}"))?;
        if url.scheme_str() != Some("http") {
            // No TLS client here yet: an https:// upstream is refused rather than downgraded,
            // and plain http:// needs processor.allow_insecure_upstream (config validation).
            return Err(
                "processor.upstream_url: only http:// (with allow_insecure_upstream, for \
                 development) is supported; an HTTPS upstream client is not built yet"
                    .into(),
            );
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
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
