//! The exchange on the wire: the strict JSON reader, the HTTP routes (`POST /`, `POST /pair`,
//! `POST /pair/{SERVICEKEY}/{SERIAL}`, `POST /renew`, `GET /rootca`) shared by the pairing
//! listener and the main listener's hook, and the one-message WSS exchange.

use super::error::{json_response, PairingError};
use crate::app::App;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use std::net::SocketAddr;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use zeroize::Zeroizing;

/// `{"posId": "123", "setupCode": "8QW1YS1D"}`, optionally with `"csr"` (PEM PKCS#10).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeRequest {
    #[serde(rename = "posId")]
    pub pos_id: String,
    #[serde(rename = "setupCode")]
    pub setup_code: Zeroizing<String>,
    #[serde(default)]
    pub csr: Option<String>,
}

/// The renewal body: empty, `{}` or `{"csr": "..."}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    #[serde(default)]
    pub csr: Option<String>,
}

pub const MAX_POS_ID: usize = 64;

/// The REST flavour of CreatePairingCode (terminals ask for their code; main listener).
const REST_CODE: &str = "/REST/SIS.svc/pairingCode";
const REST_CODE_VERSIONED: &str = "/2.1.32/REST/SIS.svc/pairingCode";

/// Read an exchange request: one JSON object, known fields only, a sane `posId`.
pub fn parse_request(body: &[u8]) -> Result<ExchangeRequest, PairingError> {
    let req: ExchangeRequest = from_json(body)?;
    check_pos_id(&req.pos_id)?;
    Ok(req)
}

pub fn parse_renew(body: &[u8]) -> Result<RenewRequest, PairingError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RenewRequest::default());
    }
    from_json(body)
}

fn from_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, PairingError> {
    serde_json::from_slice(body).map_err(|e| {
        // serde's messages may quote values (a setup code sent as a number, say): pass on only
        // those that name fields, otherwise say where.
        let text = e.to_string();
        let msg = if text.starts_with("unknown field") || text.starts_with("missing field") {
            text.split(" at line").next().unwrap_or("").to_owned()
        } else {
            format!(
                "the body must be a JSON object {{\"posId\": string, \"setupCode\": string, \
                 \"csr\"?: string}} (problem at line {}, column {})",
                e.line(),
                e.column()
            )
        };
        PairingError::BadRequest(msg)
    })
}

pub fn check_pos_id(pos_id: &str) -> Result<(), PairingError> {
    if pos_id.is_empty() {
        return Err(PairingError::BadPosId("posId is empty"));
    }
    if pos_id.len() > MAX_POS_ID {
        return Err(PairingError::BadPosId("posId is over 64 characters"));
    }
    if !pos_id.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(PairingError::BadPosId(
            "posId must be printable ASCII characters",
        ));
    }
    Ok(())
}

/// What the listener knows about the connection a request came on.
pub struct Conn {
    pub peer: SocketAddr,
    /// Whether the connection is TLS: keys never travel in the clear.
    pub tls: bool,
    /// The client certificate the handshake verified (pairing listener only).
    pub client_cert: Option<Vec<u8>>,
}

/// Whether `path` is one of ours.
pub fn is_pairing_path(method: &Method, path: &str) -> bool {
    matches!(
        (method, path),
        (&Method::POST, "/" | "/pair" | "/renew")
            | (_, "/rootca" | "/dms/v2/devices/certificates/rootca")
            | (_, REST_CODE | REST_CODE_VERSIONED)
    ) || path.starts_with("/pair/")
}

/// The hook for the shared listener: answers pairing paths when pairing is on, hands every
/// other request back. The main listener gives no client certificate, so no renewal there.
pub async fn route(
    app: &App,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Request<Incoming>> {
    if app.pairing.is_none() || !is_pairing_path(req.method(), req.uri().path()) {
        return Err(req);
    }
    let conn = Conn {
        peer,
        tls: app.config.tls.is_some(),
        client_cert: None,
    };
    Ok(handle(app, &conn, req).await)
}

/// The terminal a `/pair/{SERVICEKEY}/{SERIAL}` path names.
pub(crate) fn scope_of(path: &str) -> Option<Option<String>> {
    match path {
        "/" | "/pair" => Some(None),
        p => {
            let rest = p.strip_prefix("/pair/")?;
            let decoded = percent_decode(rest)?;
            let (sk, serial) = decoded.split_once('/')?;
            (!sk.is_empty() && !serial.is_empty() && !serial.contains('/'))
                .then(|| Some(decoded.clone()))
        }
    }
}

pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Answer one pairing request (not a WebSocket upgrade).
pub async fn handle(app: &App, conn: &Conn, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let result = match (req.method().clone(), path.as_str()) {
        (Method::GET, "/rootca" | "/dms/v2/devices/certificates/rootca") => Ok(root_ca(app)),
        (_, "/rootca" | "/dms/v2/devices/certificates/rootca") => {
            Err(PairingError::MethodNotAllowed)
        }
        (Method::POST, "/renew") => renew(app, conn, req).await,
        (Method::POST, REST_CODE | REST_CODE_VERSIONED) => {
            let auth = req
                .headers()
                .get(hyper::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            // Token check, code write and flush: off the async worker.
            let (status, v) =
                crate::store::blocking_io(|| crate::cws::ops::create_pairing_code::rest(app, auth));
            Ok(json_response(status, v.to_string()))
        }
        (_, REST_CODE | REST_CODE_VERSIONED) => Err(PairingError::MethodNotAllowed),
        (Method::POST, p) => match scope_of(p) {
            Some(scope) => exchange(app, conn, req, scope.as_deref()).await,
            None => Err(PairingError::NotFound),
        },
        (_, p) if scope_of(p).is_some() || p == "/renew" => Err(PairingError::MethodNotAllowed),
        _ => Err(PairingError::NotFound),
    };
    result.unwrap_or_else(|e| e.to_response())
}

fn root_ca(app: &App) -> Response<Full<Bytes>> {
    let Some(p) = app.pairing.as_ref() else {
        return PairingError::NotFound.to_response();
    };
    json_response(
        StatusCode::OK,
        serde_json::json!({ "certificateChain": p.ca.root_pem() }).to_string(),
    )
}

async fn read_body(app: &App, req: Request<Incoming>) -> Result<Bytes, PairingError> {
    let max = app
        .pairing
        .as_ref()
        .map(|p| p.cfg.max_body_bytes)
        .unwrap_or(16 * 1024);
    let too_big = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok())
        .is_some_and(|n| n > max as u64);
    if too_big {
        return Err(PairingError::TooLarge(max));
    }
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(app.config.limits.body_timeout(), collect).await {
        Err(_) => Err(PairingError::BadRequest(
            "the body did not arrive in time".into(),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(PairingError::TooLarge(max))
        }
        Ok(Err(_)) => Err(PairingError::BadRequest(
            "the body could not be read".into(),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn pem_response(bundle: Zeroizing<String>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(bundle.as_bytes().to_vec())));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-pem-file"),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

async fn exchange(
    app: &App,
    conn: &Conn,
    req: Request<Incoming>,
    scope: Option<&str>,
) -> Result<Response<Full<Bytes>>, PairingError> {
    let body = read_body(app, req).await;
    let out = exchange_bytes(app, conn, body, scope).await;
    Ok(pem_response(out?))
}

/// The exchange from a body (HTTP) or a message (WSS), counted in the metrics.
async fn exchange_bytes(
    app: &App,
    conn: &Conn,
    body: Result<Bytes, PairingError>,
    scope: Option<&str>,
) -> Result<Zeroizing<String>, PairingError> {
    let result = async {
        let p = app.pairing.as_ref().ok_or(PairingError::NotFound)?;
        if !conn.tls {
            return Err(PairingError::NeedsTls);
        }
        let req = parse_request(&body?)?;
        p.exchange(app, conn.peer.ip(), req, scope).await
    }
    .await;
    app.metrics.pairing(
        "exchange",
        match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        },
    );
    result
}

async fn renew(
    app: &App,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, PairingError> {
    let result = async {
        let p = app.pairing.as_ref().ok_or(PairingError::NotFound)?;
        let cert = conn
            .client_cert
            .as_deref()
            .ok_or(PairingError::NeedsCertificate)?;
        let body = parse_renew(&read_body(app, req).await?)?;
        p.renew(app, cert, body.csr).await
    }
    .await;
    app.metrics.pairing(
        "renew",
        match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        },
    );
    Ok(pem_response(result?))
}

/// The exchange over a WebSocket: one text message with the JSON in, the PEM bundle out, then
/// a normal close. Errors: the JSON error as a text message, then a close with
/// `PairingError::close_code` and the error code as reason.
pub async fn serve_ws(
    app: std::sync::Arc<App>,
    conn: Conn,
    scope: Option<String>,
    mut ws: crate::ws::ServerStream,
) {
    let wait = app.config.limits.body_timeout();
    let first = tokio::time::timeout(wait, ws.next()).await;
    let body = match first {
        Err(_) => Err(PairingError::BadRequest(
            "no request message arrived in time".into(),
        )),
        Ok(None) => return,
        Ok(Some(Ok(Message::Text(t)))) => Ok(Bytes::from(t.as_str().as_bytes().to_vec())),
        Ok(Some(Ok(Message::Binary(b)))) => Ok(b),
        Ok(Some(Ok(_))) => Err(PairingError::BadRequest(
            "expected one text message with the JSON request".into(),
        )),
        Ok(Some(Err(e))) => {
            use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
            match e {
                WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                    Err(PairingError::TooLarge(
                        app.pairing.as_ref().map_or(0, |p| p.cfg.max_body_bytes),
                    ))
                }
                _ => return,
            }
        }
    };
    let result = exchange_bytes(&app, &conn, body, scope.as_deref()).await;
    let (msg, close) = match result {
        Ok(bundle) => (
            Message::text(bundle.as_str()),
            CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            },
        ),
        Err(e) => {
            if let PairingError::Internal(d) = &e {
                tracing::error!(error = %d, "pairing over WSS failed");
            }
            (
                Message::text(e.json()),
                CloseFrame {
                    code: CloseCode::from(e.close_code()),
                    reason: e.code().into(),
                },
            )
        }
    };
    let _ = ws.send(msg).await;
    let _ = ws.close(Some(close)).await;
    // Wait (bounded) for the peer's close, so it reads everything we sent.
    let _ = tokio::time::timeout(wait, async { while ws.next().await.is_some() {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_request_reads_and_bad_ones_say_why() {
        let r = parse_request(br#"{"posId": "123", "setupCode": "8QW1YS1D"}"#).unwrap();
        assert_eq!(
            (r.pos_id.as_str(), r.setup_code.as_str()),
            ("123", "8QW1YS1D")
        );
        assert!(r.csr.is_none());
        let err = |b: &[u8]| match parse_request(b) {
            Err(e) => (e.code(), e.message()),
            Ok(_) => panic!("accepted {}", String::from_utf8_lossy(b)),
        };
        let (code, msg) = err(br#"{"posId":"1","setupCode":"X","extra":1}"#);
        assert_eq!(code, "invalid_request");
        assert!(msg.contains("unknown field `extra`"), "{msg}");
        let (_, msg) = err(br#"{"posId":"1"}"#);
        assert!(msg.contains("missing field `setupCode`"), "{msg}");
        // A code sent as a number is not quoted back.
        let (code, msg) = err(br#"{"posId":"1","setupCode":12345678}"#);
        assert_eq!(code, "invalid_request");
        assert!(!msg.contains("12345678"), "{msg}");
        assert_eq!(err(br#"{"posId":"","setupCode":"x"}"#).0, "invalid_pos_id");
        let long = format!(r#"{{"posId":"{}","setupCode":"x"}}"#, "p".repeat(65));
        assert_eq!(err(long.as_bytes()).0, "invalid_pos_id");
        let ok64 = format!(r#"{{"posId":"{}","setupCode":"x"}}"#, "p".repeat(64));
        assert!(parse_request(ok64.as_bytes()).is_ok());
        assert_eq!(
            err(br#"{"posId":"a\u0007","setupCode":"x"}"#).0,
            "invalid_pos_id"
        );
        assert_eq!(err(b"[1,2]").0, "invalid_request");
        assert_eq!(err(b"").0, "invalid_request");
    }

    #[test]
    fn scopes_come_from_the_path() {
        assert_eq!(scope_of("/"), Some(None));
        assert_eq!(scope_of("/pair"), Some(None));
        assert_eq!(
            scope_of("/pair/SK1/SER%209"),
            Some(Some("SK1/SER 9".into()))
        );
        assert_eq!(scope_of("/pair/SK1"), None);
        assert_eq!(scope_of("/pair/SK1/a/b"), None);
        assert_eq!(scope_of("/pair/%zz/x"), None);
        assert_eq!(scope_of("/other"), None);
    }

    proptest! {
        #[test]
        fn the_json_reader_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_request(&body);
            let _ = parse_renew(&body);
        }

        #[test]
        fn any_printable_pos_id_up_to_64_is_read_back(pos in "[ -~]{1,64}", code in "[0-9A-Z]{8}") {
            let body = serde_json::json!({"posId": pos, "setupCode": code}).to_string();
            let r = parse_request(body.as_bytes()).unwrap();
            prop_assert_eq!(r.pos_id, pos);
            prop_assert_eq!(r.setup_code.as_str(), code.as_str());
        }
    }
}
