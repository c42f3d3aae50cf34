//! A terminal registered with RegisterTerminal as a device principal (issue 12's option beyond
//! the seed): at the device listener it may present its TerminalAccessToken instead of an OAuth2
//! access token. The token is checked by `cws::session::authenticate`, the one place that knows
//! the terminal-token rules (signature, lifetime, revoked, re-registered, superseded, pending
//! renewal), and the terminal then acts as a device client whose scope is its merchant profile
//! and its own serial: it may register only a tsn naming that serial (`tsn_matches`).
//!
//! Its client id is `terminal:` and the terminal id (hex), so a connection JWT names it and the
//! connection URL can see that the terminal still exists and is not revoked, as an OAuth2
//! client's connection checks that the client was not removed.

use super::error::ConnectorError;
use crate::app::App;
use crate::cws::error::Error as CwsError;
use crate::store::connector::{ClientRecord, ClientRole, Scope};
use crate::store::{TerminalId, TerminalRecord};

const PREFIX: &str = "terminal:";

/// An OAuth2 access token is a JWT (three parts joined by dots); a TerminalAccessToken is
/// standard base64, which has no dot.
pub fn is_terminal_token(token: &str) -> bool {
    !token.contains('.')
}

/// The device client a terminal acts as.
pub fn principal(id: &TerminalId, r: &TerminalRecord) -> ClientRecord {
    ClientRecord {
        id: format!("{PREFIX}{}", id.to_hex()),
        domain: String::new(),
        secret_hash: String::new(),
        role: ClientRole::Device,
        scope: Scope {
            merchant: r.merchant_profile_id.clone(),
            store: None,
            tsn: Some(r.device_serial.clone()),
        },
        created_at_ms: r.registered_at_ms,
    }
}

/// Check a TerminalAccessToken. A pending renewed token becomes current here as it would on a
/// transaction (using it proves the terminal received it); that write is durable before the
/// listener answers.
pub async fn authorize(app: &App, token: &str) -> Result<ClientRecord, ConnectorError> {
    let s = crate::cws::session::authenticate(app, Some(token)).map_err(|e| match e {
        CwsError::InvalidToken(_) | CwsError::ExpiredToken => ConnectorError::InvalidToken,
        other => ConnectorError::Internal(format!("terminal token check: {other}")),
    })?;
    if s.wrote {
        app.commit
            .durable_logged() // the terminal's record only
            .await
            .map_err(|e| ConnectorError::Internal(format!("promoted terminal token: {e}")))?;
    }
    Ok(principal(&s.terminal_id, &s.record))
}

/// The client behind a connection JWT's `client` claim when it names a terminal: None if this
/// is not a terminal id. Some(None): the terminal is gone or revoked.
pub fn lookup(app: &App, client_id: &str) -> Result<Option<Option<ClientRecord>>, ConnectorError> {
    let Some(hex) = client_id.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let Some(id) = TerminalId::from_hex(hex) else {
        return Ok(Some(None));
    };
    Ok(Some(
        app.store
            .get(&id)?
            .filter(|r| !r.revoked)
            .map(|r| principal(&id, &r)),
    ))
}
