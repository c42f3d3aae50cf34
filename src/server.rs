//! The HTTP side: a hyper 1 server on a real socket, plain or TLS (see `tls`). It enforces the
//! transport limits (headers, body size and time, connections), routes paths to a service, reads
//! the envelope, checks the SOAPAction, hands the operation to `ops::dispatch` and writes the
//! reply or the fault.

use crate::app::App;
use crate::cws::error::{Error, Service};
use crate::cws::ops::{self, register_terminal, Context, Reply};
use crate::cws::soap::{self, Base};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Our WSDL and schema files, compiled in so the binary serves them from anywhere.
pub const WSDL_FILES: &[(&str, &str)] = &[
    ("SIS.wsdl", include_str!("../wsdl/SIS.wsdl")),
    ("TPS.wsdl", include_str!("../wsdl/TPS.wsdl")),
];

static REQUEST_IDS: AtomicU64 = AtomicU64::new(1);

/// Serve until `shutdown` resolves, then finish in-flight requests and return.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = app.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Our own graceful shutdown: hyper-util's only watches plain connections, and ours are
    // upgradeable (WebSockets). Each connection holds a receiver; `closed()` waits for them all.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tls = match &app.config.tls {
        Some(cfg) => {
            let acceptor = crate::tls::acceptor(cfg).map_err(std::io::Error::other)?;
            let mtls = cfg.client_ca_file.is_some();
            tracing::info!(client_certificates_required = mtls, "serving HTTPS");
            Some(acceptor)
        }
        None => None,
    };
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
        let app = app.clone();
        // Taken now, so a shutdown also waits for (and then closes) a connection mid-handshake.
        let watcher = stop_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(app, peer, watcher, stream).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(app.config.limits.header_timeout(), handshake).await
                    {
                        Ok(Ok(stream)) => serve_connection(app, peer, watcher, stream).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
    app.connector.shutdown().await;
    app.store.flush().map_err(std::io::Error::other)?;
    Ok(())
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
        .max_buf_size(limits.max_header_bytes.max(8192))
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

fn service_for(path: &str) -> Option<Service> {
    match path {
        "/SIS.svc" | "/2.1.32/SIS.svc" | "/2.1.28/SIS.svc" => Some(Service::Sis),
        "/TPS.svc" | "/2.1.32/TPS.svc" | "/2.1.28/TPS.svc" => Some(Service::Tps),
        _ => None,
    }
}

async fn handle(
    app: Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = REQUEST_IDS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("request", id, method = %req.method(), path = req.uri().path());
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

async fn route(app: &App, peer: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if crate::connector::handles(app, req.uri().path()) {
        return crate::connector::route(app, peer, req).await;
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_ascii_lowercase();
    let method = req.method().clone();
    if let Some(service) = service_for(&path) {
        return match method {
            Method::POST => soap_request(app, service, peer, req).await,
            Method::GET if query == "wsdl" || query == "singlewsdl" => {
                let name = if service == Service::Sis {
                    "SIS.wsdl"
                } else {
                    "TPS.wsdl"
                };
                wsdl_file(name)
            }
            _ => fault_response(&Error::MethodNotAllowed, service, "Unknown", Base::Evosnap),
        };
    }
    if let Some(name) = path.strip_prefix("/wsdl/") {
        return wsdl_file(name);
    }
    if let Some(rest) = path
        .strip_prefix("/2.1.32/REST/SIS.svc/registerTerminal/")
        .or_else(|| path.strip_prefix("/REST/SIS.svc/registerTerminal/"))
    {
        if method != Method::POST {
            return fault_response(
                &Error::MethodNotAllowed,
                Service::Sis,
                "RegisterTerminal",
                Base::Evosnap,
            );
        }
        return rest_register(app, peer, rest, &req).await;
    }
    if path == "/healthz" && method == Method::GET {
        return plain(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into());
    }
    fault_response(&Error::NotFound, Service::Sis, "Unknown", Base::Evosnap)
}

fn wsdl_file(name: &str) -> Response<Full<Bytes>> {
    match WSDL_FILES.iter().find(|(n, _)| *n == name) {
        Some((_, body)) => plain(
            StatusCode::OK,
            "text/xml; charset=utf-8",
            Bytes::from_static(body.as_bytes()),
        ),
        None => fault_response(&Error::NotFound, Service::Sis, "Unknown", Base::Evosnap),
    }
}

fn plain(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn fault_response(err: &Error, service: Service, op: &str, base: Base) -> Response<Full<Bytes>> {
    let fault = err.to_fault(service, op);
    if fault.code == "s:Server" {
        tracing::error!(error = %err, operation = op, "request failed");
    } else {
        tracing::debug!(error = %err, operation = op, "request refused");
    }
    let status =
        StatusCode::from_u16(fault.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    plain(
        status,
        "text/xml; charset=utf-8",
        fault.to_envelope(base).into(),
    )
}

/// The decoded HTTP Basic credentials (`user:password`), if the header is there and decodes.
fn basic_credentials<B>(req: &Request<B>) -> Option<String> {
    let v = req
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 8192 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    String::from_utf8(raw).ok()
}

/// Read the whole body under the size and time limits.
async fn read_body(app: &App, body: Incoming) -> Result<Bytes, Error> {
    let max = app.config.limits.max_body_bytes;
    let collect = Limited::new(body, max).collect();
    match tokio::time::timeout(app.config.limits.body_timeout(), collect).await {
        Err(_) => Err(Error::BodyTimeout),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::PayloadTooLarge(max))
        }
        Ok(Err(e)) => Err(Error::validation(
            "Body",
            format!("the request body could not be read: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

async fn soap_request(
    app: &App,
    service: Service,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let ct_ok = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/xml"))
        })
        .unwrap_or(false);
    if !ct_ok {
        return fault_response(
            &Error::UnsupportedMediaType,
            service,
            "Unknown",
            Base::Evosnap,
        );
    }
    if let Some(len) = req.headers().get(hyper::header::CONTENT_LENGTH) {
        let too_big = len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n > app.config.limits.max_body_bytes as u64);
        if too_big {
            return fault_response(
                &Error::PayloadTooLarge(app.config.limits.max_body_bytes),
                service,
                "Unknown",
                Base::Evosnap,
            );
        }
    }
    let action = req
        .headers()
        .get("soapaction")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().trim_matches('"').to_owned());
    let basic = basic_credentials(&req);
    let body = match read_body(app, req.into_body()).await {
        Ok(b) => b,
        Err(e) => return fault_response(&e, service, "Unknown", Base::Evosnap),
    };
    let envelope = match soap::parse_envelope(&body, &app.xml_limits) {
        Ok(e) => e,
        Err(e) => return fault_response(&e.into(), service, "Unknown", Base::Evosnap),
    };
    let op = &envelope.operation;
    let Some((name, base)) = ops::identify(service, op) else {
        let e = Error::UnknownOperation(op.name.clone());
        return fault_response(&e, service, &op.name, Base::Evosnap);
    };
    if let Some(a) = action.as_deref().filter(|a| !a.is_empty()) {
        if a != ops::soap_action(service, base, name) {
            return fault_response(&Error::ActionMismatch, service, name, base);
        }
    }
    let ctx = Context {
        base,
        basic_user: basic,
        peer: Some(peer),
    };
    let started = std::time::Instant::now();
    let work = ops::dispatch(app, service, name, op, &ctx);
    let result = match tokio::time::timeout(app.config.limits.handler_timeout(), work).await {
        Ok(r) => r,
        Err(_) => Err(Error::HandlerTimeout),
    };
    record(app, service, name, &result, started.elapsed());
    match result {
        Ok(Reply { header, body }) => plain(
            StatusCode::OK,
            "text/xml; charset=utf-8",
            soap::envelope(header.as_deref(), &body).into(),
        ),
        Err(Error::UpstreamFault(body)) => {
            let mut r = plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/xml; charset=utf-8",
                body.into(),
            );
            r.headers_mut().insert(
                "x-snapgate-relayed",
                HeaderValue::from_static("upstream-fault"),
            );
            r
        }
        Err(e) => fault_response(&e, service, name, base),
    }
}

/// Count one SOAP operation in the metrics.
fn record(
    app: &App,
    service: Service,
    name: &str,
    result: &Result<Reply, Error>,
    took: std::time::Duration,
) {
    let m = &app.metrics;
    // Operation names come from our fixed lists, never from the request.
    let label = ops::known_operation(service, name).unwrap_or("other");
    m.observe(label, took);
    match result {
        Ok(r) => {
            if r.header.is_some() {
                m.token_renewed();
            }
            if service == Service::Tps && label != "Ping" {
                m.transaction(label, "ok");
            }
        }
        Err(e) => {
            m.fault(e.kind());
            if service == Service::Tps && label != "Ping" {
                m.transaction(label, e.kind());
            }
        }
    }
}

/// `POST /2.1.32/REST/SIS.svc/registerTerminal/{ServiceKey}/{VendorId}`, credentials in Basic.
/// Answers the token as a JSON string, or a REST ErrorResponse with 401.
async fn rest_register(
    app: &App,
    peer: SocketAddr,
    rest: &str,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut parts = rest.split('/');
    let (sk, vendor) = (parts.next(), parts.next());
    let creds = match (sk, vendor, parts.next()) {
        (Some(s), Some(v), None) if !s.is_empty() && !v.is_empty() => {
            let basic = basic_credentials(req).and_then(|b| register_terminal::split_basic(&b));
            register_terminal::from_parts(
                Some(s),
                Some(v),
                basic.as_ref().map(|b| b.0.as_str()),
                basic.as_ref().map(|b| b.1.as_str()),
            )
        }
        _ => Err(Error::NotFound),
    };
    let ctx = Context {
        base: Base::Evosnap,
        basic_user: None,
        peer: Some(peer),
    };
    let result = match creds {
        Ok(c) => register_terminal::apply(app, &c, &ctx).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(token) => plain(
            StatusCode::OK,
            "application/json; charset=utf-8",
            format!("\"{token}\"").into(),
        ),
        Err(e) => {
            let f = e.to_fault(Service::Sis, "RegisterTerminal");
            let status = match &e {
                Error::Authentication(_) => StatusCode::UNAUTHORIZED,
                Error::NotFound => StatusCode::NOT_FOUND,
                _ => {
                    StatusCode::from_u16(f.http_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            };
            let json = serde_json::json!({
                "ErrorId": f.error_id,
                "HelpUrl": null,
                "Messages": [f.problem_type],
                "Operation": "RegisterTerminal",
                "Reason": f.problem_type,
                "ValidationErrors": [],
            })
            .to_string();
            plain(status, "application/json; charset=utf-8", json.into())
        }
    }
}
