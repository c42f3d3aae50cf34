//! Operator actions on terminals (list, show, revoke, force a refresh) and the admin HTTP
//! listener that exposes them with `/metrics` and `/healthz`. The CLI uses the same functions,
//! either on the data folder directly (server stopped) or through the admin listener.
//!
//! The admin listener has no authentication of its own: bind it to loopback (the default) or a
//! management network only.

use crate::app::App;
use crate::cws::error::Error;
use crate::store::{self, from_ms, to_ms, TerminalId, TerminalRecord, TerminalStore};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A terminal as operators see it. Holds no secret: a token id cannot authenticate anything.
pub fn terminal_json(id: &TerminalId, r: &TerminalRecord) -> Value {
    let t = |ms: i64| from_ms(ms).to_rfc3339();
    json!({
        "terminal_id": id.to_hex(),
        "service_key": r.service_key,
        "vendor_id": r.vendor_id,
        "merchant_profile_id": r.merchant_profile_id,
        "device_serial": r.device_serial,
        "service_id": r.service_id,
        "bdk_id": r.bdk_id,
        "device_id": r.device_id,
        "registered_at": t(r.registered_at_ms),
        "token_id": r.token_id.to_hex(),
        "token_issued_at": t(r.issued_at_ms),
        "token_expires_at": t(r.expires_at_ms),
        "refresh_due_at": t(r.refresh_due_at_ms),
        "refresh_flag": r.refresh_flag,
        "pending_token_id": r.pending.map(|p| p.token_id.to_hex()),
        "last_ksn_counter": r.last_counter,
        "revoked": r.revoked,
    })
}

/// Find a terminal by its id (32 hex digits) or by `serviceKey/DeviceSerialNumber`.
pub fn resolve(which: &str) -> Option<TerminalId> {
    match which.split_once('/') {
        Some((sk, serial)) => Some(TerminalId::new(sk, serial)),
        None => TerminalId::from_hex(which),
    }
}

pub fn list(
    s: &dyn TerminalStore,
    after: Option<&TerminalId>,
    limit: usize,
) -> Result<Value, Error> {
    let rows = s.list(after, limit)?;
    Ok(Value::Array(
        rows.iter().map(|(id, r)| terminal_json(id, r)).collect(),
    ))
}

pub fn show(s: &dyn TerminalStore, id: &TerminalId) -> Result<Option<Value>, Error> {
    Ok(s.get(id)?.map(|r| terminal_json(id, &r)))
}

/// Revoke: every token of the terminal stops working until it registers again.
pub fn revoke(s: &dyn TerminalStore, id: &TerminalId) -> Result<Option<Value>, Error> {
    change(s, id, |r| {
        r.revoked = true;
        r.pending = None;
    })
}

/// Raise the RefreshToken flag now: the next transaction with track data gets a new token.
pub fn force_refresh(
    s: &dyn TerminalStore,
    id: &TerminalId,
    now: DateTime<Utc>,
) -> Result<Option<Value>, Error> {
    change(s, id, |r| {
        r.refresh_flag = true;
        r.refresh_due_at_ms = r.refresh_due_at_ms.min(to_ms(now));
    })
}

fn change(
    s: &dyn TerminalStore,
    id: &TerminalId,
    f: impl Fn(&mut TerminalRecord),
) -> Result<Option<Value>, Error> {
    let out = store::update(s, id, |cur| {
        let Some(cur) = cur else {
            return Ok::<_, Error>((None, None));
        };
        let mut r = cur.clone();
        f(&mut r);
        Ok((Some(r.clone()), Some(terminal_json(id, &r))))
    })?;
    s.flush()?;
    Ok(out)
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    reply(status, "application/json", format!("{v}\n"))
}

/// `/metrics`: the registry's metrics, then the store's, read now: its group-commit counters,
/// the writes queued for the next flush, and whether a store round trip answers (the same ping
/// as `/readyz`; this runs off the async workers like every admin answer).
fn render_metrics(app: &App) -> String {
    use crate::metrics::{Scraped, ScrapedKind::Gauge};
    let mut scraped = Vec::from(app.commit.scraped(app.engine.fdatasyncs()));
    scraped.push(Scraped {
        name: "snapgate_store_up",
        help: "1 when a store round trip answered at this scrape, else 0 (as /readyz).",
        kind: Gauge(i64::from(app.store.ping().is_ok())),
    });
    scraped.push(Scraped {
        name: "snapgate_store_flush_queue",
        help: "Durable writes waiting for the next group-commit flush.",
        kind: Gauge(app.commit.queued() as i64),
    });
    app.metrics.render_with(&scraped)
}

fn error_reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json_reply(status, &json!({ "error": message }))
}

async fn route(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    // Every operator action reads or writes a store, and revoke / refresh flush inline: all of
    // it runs off the async worker, so a slow disk stalls this request only.
    store::blocking_io(|| answer(app, method, &path, &query))
}

fn answer(app: &App, method: Method, path: &str, query: &str) -> Response<Full<Bytes>> {
    let store = &*app.store;
    if let Some(r) = crate::pairing::admin::route(app, &method, path, query) {
        return r;
    }
    if let Some((status, v)) = crate::connector::admin::route(&app.connector, &method, path, query)
    {
        return json_reply(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), &v);
    }
    let result: Result<Response<Full<Bytes>>, Error> = (|| {
        Ok(match (method, path) {
            (Method::GET, "/healthz") => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            (Method::GET, "/metrics") => reply(
                StatusCode::OK,
                crate::metrics::CONTENT_TYPE,
                render_metrics(app),
            ),
            (Method::POST, "/admin/reload") => match app.reload() {
                Ok(()) => json_reply(StatusCode::OK, &json!({ "reloaded": true })),
                Err(e) => error_reply(StatusCode::BAD_REQUEST, &e),
            },
            (Method::GET, "/admin/terminals") => {
                let mut after = None;
                let mut limit = 100;
                for kv in query.split('&') {
                    match kv.split_once('=') {
                        Some(("after", v)) => after = TerminalId::from_hex(v),
                        Some(("limit", v)) => limit = v.parse().unwrap_or(100).min(10_000),
                        _ => {}
                    }
                }
                json_reply(StatusCode::OK, &list(store, after.as_ref(), limit)?)
            }
            (m, p) if p.starts_with("/admin/terminals/") => {
                let rest = &p["/admin/terminals/".len()..];
                let (which, action) = match rest.rsplit_once('/') {
                    Some((w, a)) if a == "revoke" || a == "refresh" => (w, Some(a)),
                    _ => (rest, None),
                };
                let Some(id) = resolve(which) else {
                    return Ok(error_reply(StatusCode::BAD_REQUEST, "not a terminal id"));
                };
                let found = match (m, action) {
                    (Method::GET, None) => show(store, &id)?,
                    (Method::POST, Some("revoke")) => revoke(store, &id)?,
                    (Method::POST, Some("refresh")) => force_refresh(store, &id, app.clock.now())?,
                    _ => {
                        return Ok(error_reply(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "method not allowed",
                        ))
                    }
                };
                match found {
                    Some(v) => json_reply(StatusCode::OK, &v),
                    None => error_reply(StatusCode::NOT_FOUND, "no such terminal"),
                }
            }
            (m, p) if p.starts_with("/admin/merchants") => {
                use crate::cws::merchants::{self, MerchantError};
                let now = crate::store::to_ms(app.clock.now());
                let done = match merchants::from_request(&m, p, query, now) {
                    None => Err(MerchantError::NotFound),
                    Some(action) => action.and_then(|a| merchants::run(&*app.profiles, a)),
                };
                match done {
                    Ok(v) => json_reply(StatusCode::OK, &v),
                    Err(MerchantError::Invalid(e)) => error_reply(StatusCode::BAD_REQUEST, &e),
                    Err(MerchantError::NotFound) => {
                        error_reply(StatusCode::NOT_FOUND, "no such merchant profile")
                    }
                    Err(MerchantError::Store(e)) => return Err(e.into()),
                }
            }
            _ => error_reply(StatusCode::NOT_FOUND, "not found"),
        })
    })();
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "admin request failed");
        error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see the server log",
        )
    })
}

/// Serve the admin endpoints until `shutdown` resolves.
pub async fn run(app: Arc<App>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let timeout = app.config.limits.header_timeout();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(route(&app, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Call the admin listener (the CLI's remote path). Loopback or management addresses only.
pub async fn call(base: &str, method: Method, path: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt;
    let url: hyper::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("bad admin URL {base:?}: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let work = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("admin listener: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), work)
        .await
        .map_err(|_| "admin listener did not answer in 30 s".to_string())?
}
