//! WebSocket upgrades on our hyper listeners (plain or TLS), shared by every service that speaks
//! WSS. This file owns only the RFC 6455 handshake; framing, masking, close codes and the frame
//! and message size limits are tungstenite's, configured by the caller.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
pub use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// The server side of an upgraded connection.
pub type ServerStream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether `req` asks for a WebSocket upgrade (RFC 6455 §4.2.1: GET, `Upgrade: websocket`,
/// `Connection: upgrade`, a key and version 13).
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    let has_token = |name, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    req.method() == hyper::Method::GET
        && has_token(UPGRADE, "websocket")
        && has_token(CONNECTION, "upgrade")
        && h.contains_key(SEC_WEBSOCKET_KEY)
        && h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) == Some("13")
}

/// Answer the handshake with 101 and hand the upgraded stream to `serve` once hyper releases
/// the connection. The caller has checked `is_upgrade` and authorised the request.
pub fn accept<F, Fut>(
    req: Request<Incoming>,
    config: WebSocketConfig,
    serve: F,
) -> Response<Full<Bytes>>
where
    F: FnOnce(ServerStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY) else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"")));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept_key = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let io = TokioIo::new(upgraded);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
                serve(ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method("GET").uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    const GOOD: &[(&str, &str)] = &[
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn a_complete_handshake_request_is_an_upgrade() {
        assert!(is_upgrade(&req(GOOD)));
    }

    #[test]
    fn each_missing_part_is_not_an_upgrade() {
        for (skip, missing) in GOOD.iter().enumerate() {
            let partial: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, h)| *h)
                .collect();
            assert!(!is_upgrade(&req(&partial)), "without {missing:?}");
        }
        let mut v8 = GOOD.to_vec();
        v8[3] = ("sec-websocket-version", "8");
        assert!(!is_upgrade(&req(&v8)));
    }

    #[test]
    fn the_accept_key_is_rfc6455s_example() {
        // RFC 6455 §1.3: this key answers with this accept value.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
