//! The pairing listener (`pairing.listen`): HTTPS and WSS with the `[tls]` server certificate
//! and an optional client certificate, serving pairing paths only (a POS without a certificate
//! must reach the exchange; nothing else is reachable that way). Same limits as the main
//! listener: connection cap, header and handshake timeouts, graceful shutdown.

use super::exchange::{self, Conn};
use crate::app::App;
use crate::ws;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serve pairing until `shutdown` resolves, then finish in-flight requests and return.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls_cfg = app.config.tls.as_ref().ok_or_else(|| {
        std::io::Error::other("pairing.listen needs a [tls] section: keys never travel in clear")
    })?;
    let acceptor = super::trust::pairing_acceptor(&app, tls_cfg).map_err(std::io::Error::other)?;
    let max = app.config.limits.max_connections;
    crate::server::accept_loop(listener, max, shutdown, move |stream, peer, mut stop| {
        let app = app.clone();
        let acceptor = acceptor.clone();
        async move {
            let hs =
                tokio::time::timeout(app.config.limits.header_timeout(), acceptor.accept(stream))
                    .await;
            let tls = match hs {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "pairing TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let client_cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            let limits = app.config.limits.clone();
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                let client_cert = client_cert.clone();
                async move { Ok::<_, Infallible>(handle(app, peer, client_cert, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout())
                .max_buf_size(limits.max_header_bytes.max(8192))
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "pairing connection ended with an error");
            }
        }
    })
    .await;
    Ok(())
}

async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    client_cert: Option<Vec<u8>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let conn = Conn {
        peer,
        tls: true,
        client_cert,
    };
    if ws::is_upgrade(&req) {
        let scope = exchange::scope_of(req.uri().path());
        let Some(scope) = scope else {
            return super::error::PairingError::NotFound.to_response();
        };
        let max = app
            .pairing
            .as_ref()
            .map_or(16 * 1024, |p| p.cfg.max_body_bytes);
        let mut cfg = ws::WebSocketConfig::default();
        cfg.max_message_size = Some(max);
        cfg.max_frame_size = Some(max);
        return ws::accept(req, cfg, move |stream| {
            exchange::serve_ws(app, conn, scope, stream)
        });
    }
    exchange::handle(&app, &conn, req).await
}
