//! The HTTP side shared by every service: a hyper 1 server on a real socket, plain or TLS (see
//! `tls`). It owns the transport limits (headers, body size and time, connections), the request
//! id and span, graceful shutdown, and routing a path to its service (`cws::http` for the CWS
//! gateway). Services read bodies and answer through `crate::http`.

use crate::app::App;
use crate::http::plain;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Serve until `shutdown` resolves, then finish in-flight requests and return.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = app.config.limits.clone();
    app.connector.start_heartbeat();
    let tls = match &app.config.tls {
        Some(cfg) => {
            let acceptor =
                crate::pairing::trust::main_acceptor(&app, cfg).map_err(std::io::Error::other)?;
            let mtls = cfg.client_ca_file.is_some();
            tracing::info!(client_certificates_required = mtls, "serving HTTPS");
            Some(acceptor)
        }
        None => None,
    };
    let serving = app.clone();
    accept_loop(
        listener,
        limits.max_connections,
        shutdown,
        move |stream, peer, watcher| {
            let (app, tls) = (serving.clone(), tls.clone());
            async move {
                match tls {
                    None => serve_connection(app, peer, watcher, stream).await,
                    Some(acceptor) => {
                        let handshake = acceptor.accept(stream);
                        match tokio::time::timeout(app.config.limits.header_timeout(), handshake)
                            .await
                        {
                            Ok(Ok(stream)) => serve_connection(app, peer, watcher, stream).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                }
            }
        },
    )
    .await;
    // Relayed WebSocket connections get their close order, then every request has finished:
    // answer any queued durability wait, stop the flusher.
    app.connector.shutdown().await;
    app.commit.close().await;
    // A checkpoint: everything is in sled's durable state, and the next start replays nothing.
    crate::store::blocking_io(|| {
        app.store.flush()?;
        app.store.checkpoint(true)
    })
    .map_err(std::io::Error::other)?;
    Ok(())
}

/// Accept connections until `shutdown` resolves, at most `max` at once, handing each to
/// `serve` with a receiver that turns true when the listener stops; then wait until every
/// connection has ended. Our own graceful shutdown: hyper-util's only watches plain
/// connections, and ours are upgradeable (WebSockets). The main and the pairing listener share
/// it.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    max: usize,
    shutdown: impl Future<Output = ()>,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr, tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max.max(1)));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Taken now, so a shutdown also waits for (and then closes) a connection mid-handshake.
        let conn = serve(stream, peer, stop_rx.clone());
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Serve HTTP/1.1 on one accepted connection, plain or TLS, until it closes.
async fn serve_connection<I>(
    app: Arc<App>,
    peer: SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
    io: I,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = app.config.limits.clone();
    let svc = hyper::service::service_fn(move |req| handle(app.clone(), peer, req));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout())
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), svc)
        // WebSocket upgrades (see `ws`) need hyper to hand the connection over after a 101.
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    // A debug span: at the default `info` filter it is disabled and costs ~5 ns, where an info
    // span cost ~1 us per request even when nothing in it logged (issue 9). Request ids then
    // reach info lines with `log.level = "info,snapgate::server=debug"` (docs/DECISIONS.md).
    let span = tracing::debug_span!("request", id, method = %req.method(), path = req.uri().path());
    let started = std::time::Instant::now();
    let mut resp = route(&app, peer, req).instrument(span.clone()).await;
    resp.headers_mut()
        .insert("x-request-id", HeaderValue::from(id));
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "done"
        )
    });
    Ok(resp)
}

async fn route(app: &Arc<App>, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if crate::connector::handles(app, req.uri().path()) {
        return crate::connector::route(app, peer, req).await;
    }
    let req = match crate::pairing::route(app, peer, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    if req.uri().path() == "/healthz" && req.method() == Method::GET {
        return plain(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into());
    }
    // Liveness (the process answers) and readiness (its store answers too).
    if req.uri().path() == "/livez" && req.method() == Method::GET {
        return plain(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into());
    }
    if req.uri().path() == "/readyz" && req.method() == Method::GET {
        return crate::store::health::readyz(app.store.clone()).await;
    }
    crate::cws::http::route(app, peer, req).await
}
