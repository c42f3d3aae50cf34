//! The CWS gateway's HTTP side: which paths are SIS and TPS, the WSDLs, the SOAP request (media
//! type, size, SOAPAction, envelope) and the REST registration form. Each request is identified
//! and parsed once into an `ops::Operation` and run by `ops::execute`; errors become faults (or
//! REST error JSON) through `error`.

use crate::app::App;
use crate::cws::error::{Error, Service};
use crate::cws::ops::{self, register_terminal, Context, OpName, Operation, Reply, Wire};
use crate::cws::soap::{self, Base};
use crate::cws::wsdl;
use crate::http::{basic_credentials, plain, read_body, BodyError};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

/// The service at a path: `/{version}/SIS.svc` or `/{version}/SvcInfo` (SIS),
/// `/{version}/TPS.svc` or `/{version}/Txn` (TPS), for any version a terminal may be configured
/// with (`2.0.19`, `2.1.28`, `2.1.32`, …: digits and dots), or without a version.
pub fn service_for(path: &str) -> Option<Service> {
    let rest = path.strip_prefix('/')?;
    let name = match rest.split_once('/') {
        Some((version, name)) if is_version(version) => name,
        Some(_) => return None,
        None => rest,
    };
    match name {
        "SIS.svc" | "SvcInfo" => Some(Service::Sis),
        "TPS.svc" | "Txn" => Some(Service::Tps),
        _ => None,
    }
}

/// A CWS endpoint version: `2.0.19`. Bounded, digits and dots, starting with a digit.
fn is_version(s: &str) -> bool {
    (1..=16).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

pub async fn route(
    app: &Arc<App>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_ascii_lowercase();
    let method = req.method().clone();
    if let Some(service) = service_for(&path) {
        return match method {
            Method::POST => soap_request(app, service, peer, req).await,
            Method::GET if query == "wsdl" || query == "singlewsdl" => {
                wsdl_file(app, &req, wsdl::file_for(service), Some(&path))
            }
            _ => fault_response(&Error::MethodNotAllowed, service, "Unknown", Base::Evosnap),
        };
    }
    if let Some(name) = path.strip_prefix("/wsdl/") {
        return wsdl_file(app, &req, name, None);
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
    fault_response(&Error::NotFound, Service::Sis, "Unknown", Base::Evosnap)
}

/// A WSDL whose address is where this client reached us (`wsdl` has the rules).
fn wsdl_file(
    app: &App,
    req: &Request<Incoming>,
    name: &str,
    service_path: Option<&str>,
) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    let base = wsdl::base_url(
        app.config.server.public_url.as_deref(),
        app.config.tls.is_some(),
        host,
        &app.config.server.listen.to_string(),
    );
    match wsdl::render(name, &base, service_path) {
        Some(body) => plain(StatusCode::OK, "text/xml; charset=utf-8", body.into()),
        None => fault_response(&Error::NotFound, Service::Sis, "Unknown", Base::Evosnap),
    }
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

impl From<BodyError> for Error {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge(max) => Error::PayloadTooLarge(max),
            BodyError::Timeout => Error::BodyTimeout,
            BodyError::Read(e) => {
                // hyper's text names its internals: the log gets it, the client our own.
                tracing::debug!(error = %e, "request body unreadable");
                Error::validation("Body", "The request body could not be read")
            }
        }
    }
}

/// A parsed request whose own texts are zeroized when it goes, whichever way the request
/// ends. The rest of its texts are slices of the request's bytes, zeroized after it.
struct Wiped<'a>(soap::Envelope<'a>);

impl Drop for Wiped<'_> {
    fn drop(&mut self) {
        soap::wipe(&mut self.0.operation);
        if let Some(h) = self.0.header.as_mut() {
            soap::wipe(h);
        }
    }
}

async fn soap_request(
    app: &Arc<App>,
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
        Err(e) => return fault_response(&e.into(), service, "Unknown", Base::Evosnap),
    };
    // The tree borrows the request's bytes (issue 9, item 4). Both go when the request is
    // answered, whichever way: first the tree, zeroizing the texts it unescaped into copies,
    // then the bytes (a keyed PAN, track data), zeroized by their buffer (issue 13, point 6).
    let envelope = match soap::parse_envelope(&body, &app.xml_limits) {
        Ok(e) => Wiped(e),
        Err(e) => return fault_response(&e.into(), service, "Unknown", Base::Evosnap),
    };
    let op = &envelope.0.operation;
    let Some((name, base)) = OpName::identify(service, op) else {
        let e = Error::UnknownOperation(op.name.to_string());
        return fault_response(&e, service, &op.name, Base::Evosnap);
    };
    if let Some(a) = action.as_deref().filter(|a| !a.is_empty()) {
        if a != name.soap_action(service, base) {
            return fault_response(&Error::ActionMismatch, service, name.as_str(), base);
        }
    }
    let ctx = Context {
        base,
        wire: Wire::Soap,
        basic_user: basic,
        peer: Some(peer),
        commit: Default::default(),
    };
    let parsed = ops::namespaces::enforce(app.config.cws.namespaces, &app.metrics, name, op, base)
        .and_then(|()| Operation::parse(name, op, &ctx));
    let result = ops::execute(app, name, parsed, &ctx).await;
    match result {
        Ok(Reply { header, body }) => plain(
            StatusCode::OK,
            "text/xml; charset=utf-8",
            soap::envelope(header.as_deref(), &body).into(),
        ),
        Err(e) => fault_response(&e, service, name.as_str(), base),
    }
}

/// `POST /2.1.32/REST/SIS.svc/registerTerminal/{ServiceKey}/{VendorId}`, credentials in Basic.
/// Answers the token as a JSON string, or a REST ErrorResponse with 401.
async fn rest_register(
    app: &Arc<App>,
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
        wire: Wire::Rest,
        basic_user: None,
        peer: Some(peer),
        commit: Default::default(),
    };
    let parsed = creds.map(Operation::RegisterTerminal);
    let result = ops::execute(app, OpName::RegisterTerminal, parsed, &ctx).await;
    match result {
        Ok(reply) => plain(
            StatusCode::OK,
            "application/json; charset=utf-8",
            reply.body.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_path_a_terminal_may_use_reaches_its_service() {
        for p in [
            "/2.0.19/SvcInfo",
            "/2.1.28/SIS.svc",
            "/2.1.32/SIS.svc",
            "/SIS.svc",
            "/SvcInfo",
        ] {
            assert_eq!(service_for(p), Some(Service::Sis), "{p}");
        }
        for p in [
            "/2.0.19/Txn",
            "/2.1.28/TPS.svc",
            "/3/TPS.svc",
            "/TPS.svc",
            "/Txn",
        ] {
            assert_eq!(service_for(p), Some(Service::Tps), "{p}");
        }
        for p in [
            "/",
            "/x/SIS.svc",
            "/.2/SIS.svc",
            "/2.0.19/",
            "/2.0.19/Txn/",
            "/2.0.19/2.0.19/Txn",
            "/12345678901234567/Txn",
            "/REST/SIS.svc",
        ] {
            assert_eq!(service_for(p), None, "{p}");
        }
    }
}
