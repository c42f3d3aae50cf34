//! A fake upstream CWS endpoint on loopback for forward mode: answers every request with one
//! canned (status, body) and records (SOAPAction, body) of what it was sent. It lives as long
//! as the test's runtime.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// An upstream approval of an AuthorizeAndCapture (EVO's sample transaction).
pub const UPSTREAM_OK: &str = r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><AuthorizeAndCaptureResponse xmlns="http://schemas.evosnap.com/CWS/v2.0/TransactionProcessing"><AuthorizeAndCaptureResult xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns:b="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard" xmlns:bp="http://schemas.evosnap.com/CWS/v2.0/Transactions/Bankcard/Pro" i:type="bp:BankcardTransactionResponsePro"><Status xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions">Successful</Status><StatusCode xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions">000</StatusCode><TransactionId xmlns="http://schemas.evosnap.com/CWS/v2.0/Transactions">CCED01ACF1F44E5A8DAE8E956EFD1DE5</TransactionId><b:MaskedPAN>545454XXXXXX5454</b:MaskedPAN></AuthorizeAndCaptureResult></AuthorizeAndCaptureResponse></s:Body></s:Envelope>"#;

pub struct Upstream {
    pub addr: SocketAddr,
    /// Serving HTTPS (`start_tls`).
    pub tls: bool,
    /// (SOAPAction header, body) of every request, in order.
    pub seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Upstream {
    /// Listen on a fresh loopback port and answer every request with `status` and `reply`.
    pub async fn start(status: u16, reply: &'static str) -> Upstream {
        Self::start_with(status, reply, None).await
    }

    /// The same over HTTPS with `acceptor`'s certificate (e.g. the dev PKI's, for localhost).
    pub async fn start_tls(
        status: u16,
        reply: &'static str,
        acceptor: tokio_rustls::TlsAcceptor,
    ) -> Upstream {
        Self::start_with(status, reply, Some(acceptor)).await
    }

    async fn start_with(
        status: u16,
        reply: &'static str,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let tls = acceptor.is_some();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let s = s.clone();
                        async move {
                            let action = req
                                .headers()
                                .get("soapaction")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            s.lock().unwrap().push((action, body));
                            let mut r = hyper::Response::new(Full::new(Bytes::from_static(
                                reply.as_bytes(),
                            )));
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut()
                                .insert("content-type", "text/xml; charset=utf-8".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    },
                );
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        None => {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                        Some(a) => {
                            if let Ok(s) = a.accept(stream).await {
                                let _ = http.serve_connection(TokioIo::new(s), svc).await;
                            }
                        }
                    }
                });
            }
        });
        Upstream { addr, tls, seen }
    }

    /// The upstream TPS URL to put in `processor.upstream_url`.
    pub fn url(&self, path: &str) -> String {
        match self.tls {
            false => format!("http://{}{path}", self.addr),
            // The dev certificate names localhost.
            true => format!("https://localhost:{}{path}", self.addr.port()),
        }
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// Switch a config to forward mode towards `url`.
pub fn forward_to(c: &mut snapgate::config::Config, url: String) {
    c.processor.mode = snapgate::config::ProcessorMode::Forward;
    c.processor.upstream_url = Some(url);
    // The fake upstream is plain HTTP on loopback, and the terminal's token is never relayed.
    c.processor.allow_insecure_upstream = true;
    c.processor.upstream_session_token = Some(UPSTREAM_TOKEN.into());
}

/// The session token forward mode sends upstream in tests.
pub const UPSTREAM_TOKEN: &str = "upstream-session-token";
