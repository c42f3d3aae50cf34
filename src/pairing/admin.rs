//! Operator actions on pairing (make a code, list certificates and live codes, revoke a POS),
//! as plain functions the CLI calls on the data folder, and the admin listener's
//! `/admin/pairing/...` endpoints that call the same functions while the server runs.

use super::{cert_json, new_code_json, Pairing};
use crate::app::App;
use crate::store::{from_ms, TerminalId, TerminalStore};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// Why an operator action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("pairing is not configured (no [pairing] section)")]
    NotConfigured,
    #[error("{0:?} is not SERVICEKEY/SERIAL")]
    BadTerminal(String),
    #[error("no registered terminal {0}")]
    UnknownTerminal(String),
    #[error("no certificate for posId {0:?}")]
    UnknownPos(String),
    #[error("{0}")]
    Failed(String),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::NotConfigured
            | AdminError::UnknownTerminal(_)
            | AdminError::UnknownPos(_) => StatusCode::NOT_FOUND,
            AdminError::BadTerminal(_) => StatusCode::BAD_REQUEST,
            AdminError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A new code for `terminal` (`SERVICEKEY/SERIAL`, which must be registered) or for the
/// operator's slot. The answer holds the code: show it once, never log it.
pub fn make_code(
    p: &Pairing,
    terminals: &dyn TerminalStore,
    terminal: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Value, AdminError> {
    if let Some(t) = terminal {
        let (sk, serial) = t
            .split_once('/')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'))
            .ok_or_else(|| AdminError::BadTerminal(t.to_owned()))?;
        let known = terminals
            .get(&TerminalId::new(sk, serial))
            .map_err(|e| AdminError::Failed(e.to_string()))?;
        if known.is_none() {
            return Err(AdminError::UnknownTerminal(t.to_owned()));
        }
    }
    let code = p
        .new_code(terminal, now)
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    Ok(new_code_json(p, &code))
}

/// Issued certificates and live codes (records only: no code, no key).
pub fn list(p: &Pairing) -> Result<Value, AdminError> {
    let f = |e: crate::store::StoreError| AdminError::Failed(e.to_string());
    let certs: Vec<Value> = p
        .store
        .list_issued()
        .map_err(f)?
        .iter()
        .map(cert_json)
        .collect();
    let codes: Vec<Value> = p
        .store
        .codes()
        .map_err(f)?
        .iter()
        .map(|c| {
            json!({
                "slot": c.slot,
                "terminal": c.terminal,
                "created_at": from_ms(c.created_ms).to_rfc3339(),
                "expires_at": from_ms(c.expires_ms).to_rfc3339(),
                "failures": c.failures,
            })
        })
        .collect();
    let denied = p.store.denied().map_err(f)?.len();
    Ok(json!({ "certificates": certs, "live_codes": codes, "denied_certificates": denied }))
}

pub fn revoke(
    app_or_none: Option<&App>,
    p: &Pairing,
    pos_id: &str,
    now: DateTime<Utc>,
) -> Result<Value, AdminError> {
    let out = match app_or_none {
        Some(app) => p
            .revoke(app, pos_id)
            .map_err(|e| AdminError::Failed(e.to_string())),
        None => p
            .store
            .revoke(pos_id, crate::store::to_ms(now))
            .and_then(|r| p.store.flush().map(|_| r))
            .map_err(|e| AdminError::Failed(e.to_string())),
    }?;
    match out {
        Some(c) => Ok(json!({ "revoked": cert_json(&c) })),
        None => Err(AdminError::UnknownPos(pos_id.to_owned())),
    }
}

fn reply(status: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    super::error::json_response(status, format!("{v}\n"))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name)
            .then(|| super::exchange::percent_decode(v))
            .flatten()
    })
}

/// The admin listener's pairing endpoints; None for other paths.
pub fn route(app: &App, method: &Method, path: &str, query: &str) -> Option<Response<Full<Bytes>>> {
    let rest = path.strip_prefix("/admin/pairing")?;
    let result = (|| {
        let p = app.pairing.as_ref().ok_or(AdminError::NotConfigured)?;
        match (method, rest) {
            (&Method::POST, "/codes") => {
                let terminal = query_param(query, "terminal");
                let v = make_code(p, &*app.store, terminal.as_deref(), app.clock.now())?;
                app.metrics.pairing_code("operator");
                Ok(v)
            }
            (&Method::GET, "" | "/certs" | "/codes") => list(p),
            (&Method::POST, r) => {
                let pos = r
                    .strip_prefix("/certs/")
                    .and_then(|r| r.strip_suffix("/revoke"))
                    .and_then(super::exchange::percent_decode)
                    .ok_or(AdminError::Failed("not found".into()))?;
                revoke(Some(app), p, &pos, app.clock.now())
            }
            _ => Err(AdminError::Failed("not found".into())),
        }
    })();
    Some(match result {
        Ok(v) => reply(StatusCode::OK, &v),
        Err(AdminError::Failed(m)) if m == "not found" => {
            reply(StatusCode::NOT_FOUND, &json!({ "error": "not found" }))
        }
        Err(e) => {
            if let AdminError::Failed(m) = &e {
                tracing::error!(error = %m, "pairing admin request failed");
            }
            reply(e.status(), &json!({ "error": e.to_string() }))
        }
    })
}

/// The seed's "Details" for a new code, as the CLI prints them.
pub fn details(v: &Value) -> String {
    let mut out = format!(
        "POS connection code: {}\nvalid until:         {}\n",
        v["setupCode"].as_str().unwrap_or("?"),
        v["expiresAt"].as_str().unwrap_or("?")
    );
    if let Some(t) = v["terminal"].as_str() {
        out.push_str(&format!("terminal:            {t}\n"));
    }
    for a in v["addresses"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "pair at:             {}\n",
            a.as_str().unwrap_or("?")
        ));
    }
    out.push_str(&format!(
        "root CA SHA-256:     {}\n",
        v["rootSha256"].as_str().unwrap_or("?")
    ));
    out
}
