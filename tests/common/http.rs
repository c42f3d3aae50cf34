//! The one HTTP/1.1 client of the tests: hyper's client connection over a TcpStream, plain or
//! TLS (tokio-rustls), every exchange bounded by `REQUEST_DEADLINE`; plus raw-socket helpers
//! for the requests a well-behaved client cannot send (slow, oversized, half-written).

use super::{error_chain, find};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use snapgate::cws::soap::{self, Element, XmlLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one HTTP exchange may take (a hang guard on a busy 2-core debug build).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl HttpReply {
    pub fn xml(&self) -> Element<'_> {
        soap::parse_document(
            &self.body,
            &XmlLimits {
                max_depth: 64,
                max_elements: 10_000,
                max_attributes: 64,
            },
        )
        .unwrap_or_else(|e| panic!("reply is not XML ({e}): {}", self.body))
    }

    /// Text of the first element with this local name anywhere in the reply.
    pub fn text_of(&self, name: &str) -> Option<String> {
        find(&self.xml(), name).map(|e| e.text.trim().to_owned())
    }

    /// The fault detail element's (local name, ErrorID), if the reply is a fault.
    pub fn fault(&self) -> Option<(String, u32)> {
        let x = self.xml();
        let detail = find(&x, "detail")?;
        let d = detail.children.first()?;
        let id = d.child_text("ErrorID").ok()??.parse().ok()?;
        Some((d.name.to_string(), id))
    }

    /// The ErrorID text, if any (also for a reply that is not a fault detail we know).
    pub fn fault_id(&self) -> Option<String> {
        self.text_of("ErrorID")
    }

    pub fn assert_fault(&self, detail: &str, id: u32) {
        assert_eq!(self.status, 500, "{}", self.body);
        assert!(
            self.content_type.starts_with("text/xml"),
            "{}",
            self.content_type
        );
        assert_eq!(self.fault(), Some((detail.to_owned(), id)), "{}", self.body);
    }

    /// The renewed TerminalAccessToken in the SOAP header, if any.
    pub fn renewed_token(&self) -> Option<String> {
        let x = self.xml();
        let header = x.children.iter().find(|c| c.name == "Header")?;
        let t = header
            .children
            .iter()
            .find(|c| c.name == "TerminalAccessToken")?;
        assert_eq!(
            t.ns.as_deref(),
            Some("http://schemas.evosnap.com/CWS/v2.0/ServiceInformation")
        );
        Some(t.text.trim().to_owned())
    }

    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.status, 200, "{}", self.body);
        self
    }

    /// The body as JSON (REST replies); panics with the body if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {}", self.body))
    }

    /// HTTP 200 and t:Status Successful.
    pub fn successful(&self) -> bool {
        self.status == 200 && self.text_of("Status").as_deref() == Some("Successful")
    }
}

/// One request on its own connection; panics if the exchange fails.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> HttpReply {
    try_send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on its own connection; Err when the server is gone, the exchange breaks or
/// takes longer than `REQUEST_DEADLINE`.
pub async fn try_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpReply, String> {
    bounded(async {
        let tcp = connect(addr).await?;
        exchange(tcp, &addr.to_string(), method, path, headers, body).await
    })
    .await
}

/// A SOAP POST (text/xml and the SOAPAction) on its own connection.
pub async fn try_soap(
    addr: SocketAddr,
    path: &str,
    action: &str,
    body: &str,
) -> Result<HttpReply, String> {
    try_send(
        addr,
        "POST",
        path,
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", action),
        ],
        Bytes::from(body.to_owned()),
    )
    .await
}

/// One HTTP/1.1 request over TLS to `addr` as server name `localhost`. An error (refused
/// handshake, TLS alert, closed connection) comes back with its whole source chain.
pub async fn send_tls(
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpReply, String> {
    bounded(async {
        let tcp = connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| error_chain(&e))?;
        let host = format!("localhost:{}", addr.port());
        exchange(tls, &host, method, path, headers, body).await
    })
    .await
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {}", error_chain(&e)))
}

async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_DEADLINE:?}")))
}

/// The HTTP/1.1 exchange itself, over any connected stream.
async fn exchange<I>(
    io: I,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpReply, String>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {}", error_chain(&e)))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {}", error_chain(&e)))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let relayed = resp.headers().contains_key("x-snapgate-relayed");
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {}", error_chain(&e)))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    super::capture::save(method, path, &content_type, relayed, &body);
    Ok(HttpReply {
        status,
        content_type,
        body,
    })
}

/// A TLS client config trusting the CA certificates in `ca_file`, presenting the client
/// certificate `(cert_file, key_file)` when given.
pub fn tls_client_config(
    ca_file: &std::path::Path,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(snapgate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    Arc::new(config)
}

// ---------------------------------------------------------------------------------------------
// Raw sockets

/// Read until the peer closes the connection; None if it is still open after `limit`.
pub async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// GET /healthz on a keep-alive connection and read its whole reply ("ok\n").
pub async fn healthz_keep_alive(s: &mut TcpStream) {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !seen.ends_with(b"\r\n\r\nok\n") {
        let n = tokio::time::timeout(REQUEST_DEADLINE, s.read(&mut buf))
            .await
            .expect("healthz answered")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200 OK"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
}

/// POST `body` to `path` over a plain socket, writing while reading, so that a server that
/// answers before it read the whole body (413) is seen rather than a broken pipe. `chunked`
/// sends no Content-Length, so only the body reader's limit can stop it. Bounded by
/// `REQUEST_DEADLINE`; panics on an incomplete reply.
pub async fn post_streaming(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    chunked: bool,
) -> HttpReply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    }
    // The write half is handed back, not dropped, so the server never sees a half-close.
    let writer = tokio::spawn(async move {
        let r: std::io::Result<()> = async {
            wr.write_all(head.as_bytes()).await?;
            if chunked {
                for c in body.chunks(16 << 10) {
                    wr.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                        .await?;
                    wr.write_all(c).await?;
                    wr.write_all(b"\r\n").await?;
                }
                wr.write_all(b"0\r\n\r\n").await?;
            } else {
                wr.write_all(&body).await?;
            }
            wr.flush().await
        }
        .await;
        // A server that answered early may close before it read everything: not our concern.
        let _ = r;
        wr
    });
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            if let Some(reply) = parse_reply(&buf) {
                return reply;
            }
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        parse_reply(&buf).unwrap_or_else(|| {
            panic!(
                "incomplete HTTP reply: {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(512)])
            )
        })
    };
    let reply = tokio::time::timeout(REQUEST_DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("POST {path}: no answer within {REQUEST_DEADLINE:?}"));
    drop(writer);
    reply
}

/// A complete HTTP/1.1 reply with a Content-Length, if `buf` holds one.
pub fn parse_reply(buf: &[u8]) -> Option<HttpReply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut content_type = String::new();
    let mut len = None;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = v.trim().to_owned(),
            "content-length" => len = v.trim().parse::<usize>().ok(),
            _ => {}
        }
    }
    let body = buf.get(end + 4..end + 4 + len?)?;
    let body = String::from_utf8(body.to_vec()).ok()?;
    super::capture::save("RAW", "(raw socket)", &content_type, false, &body);
    Some(HttpReply {
        status,
        content_type,
        body,
    })
}
