//! CreatePairingCode (our operation, SIS; REST `POST /REST/SIS.svc/pairingCode` with the token
//! as the Basic username): a registered terminal asks for the POS connection code it will
//! display. The code is bound to the terminal the token names, so the POS certificate names it
//! too; a new code replaces the terminal's previous one (docs/PAIRING.md).

use super::{Reply, SIS_PATH};
use crate::app::App;
use crate::cws::error::Error;
use crate::cws::session;
use crate::cws::soap::{Base, Element};
use crate::util::xml_escape_into;

/// A code made for the calling terminal, with what it shows.
pub struct TerminalCode {
    pub code: String,
    pub expires_at: String,
    pub addresses: Vec<String>,
    pub root_sha256: String,
}

/// Authenticate `token` and make its terminal's code.
pub fn make(app: &App, token: Option<&str>) -> Result<TerminalCode, Error> {
    let s = session::authenticate(app, token)?;
    let p = app.pairing.as_ref().ok_or_else(|| {
        Error::UnknownOperation("CreatePairingCode (pairing is not configured)".into())
    })?;
    let terminal = format!("{}/{}", s.record.service_key, s.record.device_serial);
    let c = p
        .new_code(Some(&terminal), app.clock.now())
        .map_err(|e| Error::Internal(format!("pairing code: {e}")))?;
    app.metrics.pairing_code("terminal");
    tracing::info!(terminal = %terminal, "terminal made a pairing code");
    Ok(TerminalCode {
        code: c.code.reveal().to_owned(),
        expires_at: c.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        addresses: p.addresses(Some(&terminal)),
        root_sha256: p.ca.root_fingerprint(),
    })
}

/// The `sessionToken`, as sent.
pub struct CreatePairingCode {
    session_token: Option<String>,
}

pub fn parse(op: &Element) -> Result<CreatePairingCode, Error> {
    let token = op.child_text("sessionToken").map_err(|dup| {
        Error::validation(
            format!("CreatePairingCode/{dup}"),
            "The element appears more than once",
        )
    })?;
    Ok(CreatePairingCode {
        session_token: token.map(str::to_owned),
    })
}

pub fn apply(app: &App, req: CreatePairingCode, base: Base) -> Result<Reply, Error> {
    let c = make(app, req.session_token.as_deref())?;
    let mut body = format!(
        "<CreatePairingCodeResponse xmlns=\"{}{SIS_PATH}\"><CreatePairingCodeResult>\
         <SetupCode>{}</SetupCode><ExpiresAt>{}</ExpiresAt>",
        base.uri(),
        c.code,
        c.expires_at
    );
    for a in &c.addresses {
        body.push_str("<Address>");
        xml_escape_into(&mut body, a);
        body.push_str("</Address>");
    }
    body.push_str("<RootCertificateSha256>");
    xml_escape_into(&mut body, &c.root_sha256);
    body.push_str("</RootCertificateSha256></CreatePairingCodeResult></CreatePairingCodeResponse>");
    Ok(Reply { header: None, body })
}

/// The REST flavour: the token is the HTTP Basic username (as for the other REST operations).
/// Answers `{"SetupCode", "ExpiresAt", "Addresses", "RootCertificateSha256"}` or a REST
/// ErrorResponse (401 for token problems).
pub fn rest(app: &App, authorization: Option<&str>) -> (hyper::StatusCode, serde_json::Value) {
    use crate::cws::error::Service;
    let token = authorization
        .and_then(crate::http::decode_basic)
        .map(|text| {
            // The token is the username; base64 text has no ':'.
            text.split(':').next().unwrap_or("").to_owned()
        });
    match make(app, token.as_deref().filter(|t| !t.is_empty())) {
        Ok(c) => (
            hyper::StatusCode::OK,
            serde_json::json!({
                "SetupCode": c.code,
                "ExpiresAt": c.expires_at,
                "Addresses": c.addresses,
                "RootCertificateSha256": c.root_sha256,
            }),
        ),
        Err(e) => {
            let f = e.to_fault(Service::Sis, "CreatePairingCode");
            let status = match &e {
                Error::InvalidToken(_) | Error::ExpiredToken | Error::Authentication(_) => {
                    hyper::StatusCode::UNAUTHORIZED
                }
                _ => hyper::StatusCode::from_u16(f.http_status)
                    .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR),
            };
            if status.is_server_error() {
                tracing::error!(error = %e, "CreatePairingCode failed");
            }
            (
                status,
                serde_json::json!({
                    "ErrorId": f.error_id,
                    "HelpUrl": null,
                    "Messages": [f.problem_type],
                    "Operation": "CreatePairingCode",
                    "Reason": f.problem_type,
                    "ValidationErrors": [],
                }),
            )
        }
    }
}
