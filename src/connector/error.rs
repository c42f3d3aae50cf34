//! Every way a connector request or connection fails, and the one mapping of each to the wire:
//! an HTTP status with an OAuth2-style JSON body (`{"error", "error_description"}`) before a
//! WebSocket upgrade, or a JSON error message and a close code after it. docs/CONNECTOR.md lists
//! them all; messages never carry a secret or a token.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

/// Close codes the relay sends (RFC 6455 §7.4 and our 4000-4999 range).
pub mod close {
    /// The listener handed out its URL, or a peer closed cleanly.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Slow consumer: the peer did not read what was sent to it.
    pub const POLICY: u16 = 1008;
    /// A frame or message above the limits.
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Replaced: a takeover by the same client, or a newer connection of the same device.
    pub const REPLACED: u16 = 4001;
    /// The device is gone: it closed, or did not come back within the reconnect grace.
    /// The POS should fall back to local mode.
    pub const DEVICE_GONE: u16 = 4002;
    /// No message either way for `idle_timeout_ms`.
    pub const IDLE: u16 = 4003;
    /// The session reached `max_session_ms`.
    pub const SESSION_LIMIT: u16 = 4004;
    /// No pong within `pong_timeout_ms` of a ping (rarely seen: the peer is usually dead).
    pub const NO_PONG: u16 = 4008;
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    // The token endpoint (RFC 6749 §5.2).
    #[error("client authentication failed")]
    InvalidClient { basic: bool },
    #[error("only grant_type=client_credentials is supported")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the server is busy; retry shortly")]
    TemporarilyUnavailable,
    // Listeners and connection URLs.
    #[error("a bearer token is required")]
    MissingToken,
    #[error("the token is invalid or expired")]
    InvalidToken,
    #[error("the token has been used already")]
    TokenReplayed,
    #[error("the token was issued for another URL")]
    WrongAudience,
    #[error("this client may not use this listener")]
    WrongRole,
    #[error("this client may not register this terminal")]
    OutOfScope,
    #[error("no such device")]
    UnknownDevice,
    #[error("the device is not connected")]
    DeviceOffline,
    #[error("another POS holds the session")]
    SessionBusy,
    #[error("this node holds its maximum number of sessions")]
    TooManySessions,
    #[error("this node holds its maximum number of devices")]
    TooManyDevices,
    #[error("no register or claim message in time")]
    ListenerTimeout,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("a WebSocket upgrade is required here")]
    UpgradeRequired,
    #[error("several devices match this serial ({0}); claim one by its make/model/serial")]
    AmbiguousDevice(String),
    #[error("storage: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Another failure behind the connector (the terminal store's checks); detail only logged.
    #[error("internal: {0}")]
    Internal(String),
}

impl ConnectorError {
    pub fn status(&self) -> StatusCode {
        use ConnectorError::*;
        match self {
            InvalidClient { .. } | MissingToken | InvalidToken | TokenReplayed => {
                StatusCode::UNAUTHORIZED
            }
            UnsupportedGrantType | InvalidRequest(_) => StatusCode::BAD_REQUEST,
            WrongAudience | WrongRole | OutOfScope => StatusCode::FORBIDDEN,
            UnknownDevice | NotFound => StatusCode::NOT_FOUND,
            DeviceOffline | SessionBusy | AmbiguousDevice(_) => StatusCode::CONFLICT,
            ListenerTimeout => StatusCode::REQUEST_TIMEOUT,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            TemporarilyUnavailable | TooManySessions | TooManyDevices => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Store(_) | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `error` code clients branch on.
    pub fn code(&self) -> &'static str {
        use ConnectorError::*;
        match self {
            InvalidClient { .. } => "invalid_client",
            UnsupportedGrantType => "unsupported_grant_type",
            InvalidRequest(_) => "invalid_request",
            TemporarilyUnavailable => "temporarily_unavailable",
            MissingToken | InvalidToken => "invalid_token",
            TokenReplayed => "token_replayed",
            WrongAudience => "wrong_audience",
            WrongRole | OutOfScope => "forbidden",
            UnknownDevice => "unknown_device",
            DeviceOffline => "device_offline",
            SessionBusy => "session_busy",
            TooManySessions => "too_many_sessions",
            TooManyDevices => "too_many_devices",
            ListenerTimeout => "timeout",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            UpgradeRequired => "upgrade_required",
            AmbiguousDevice(_) => "ambiguous_device",
            Store(_) | Internal(_) => "server_error",
        }
    }

    /// The description sent to the client: never the storage detail.
    pub fn description(&self) -> String {
        match self {
            ConnectorError::Store(_) | ConnectorError::Internal(_) => {
                "internal error; see the server log".into()
            }
            e => e.to_string(),
        }
    }

    /// The close code after an upgrade: 4000 + the HTTP status (4401, 4403, 4404, 4409, ...).
    pub fn close_code(&self) -> u16 {
        4000 + self.status().as_u16()
    }

    /// `{"error": ..., "error_description": ...}` (with `"type": "error"` on a WebSocket).
    pub fn json(&self, ws: bool) -> String {
        let mut v = serde_json::json!({
            "error": self.code(),
            "error_description": self.description(),
        });
        if ws {
            v["type"] = "error".into();
            v["status"] = self.status().as_u16().into();
        }
        v.to_string()
    }

    /// The HTTP answer. No caching; a 401 says how to authenticate.
    pub fn response(&self) -> Response<Full<Bytes>> {
        if matches!(self, ConnectorError::Store(_) | ConnectorError::Internal(_)) {
            tracing::error!(error = %self, "connector request failed");
        } else {
            tracing::debug!(error = %self, "connector request refused");
        }
        let mut r = json_response(self.status(), self.json(false));
        let h = r.headers_mut();
        match self {
            ConnectorError::InvalidClient { basic: true } => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"snapgate-connector\""),
                );
            }
            ConnectorError::MissingToken => {
                h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ConnectorError::InvalidToken | ConnectorError::TokenReplayed => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            _ => {}
        }
        r
    }
}

/// A JSON answer that no cache keeps (RFC 6749 §5.1 asks this of token responses).
pub fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_close_codes_are_4000_plus_the_status() {
        assert_eq!(ConnectorError::SessionBusy.close_code(), 4409);
        assert_eq!(ConnectorError::UnknownDevice.close_code(), 4404);
        assert_eq!(ConnectorError::WrongAudience.close_code(), 4403);
        assert_eq!(ConnectorError::TokenReplayed.close_code(), 4401);
    }

    #[test]
    fn a_storage_error_does_not_leak_its_detail() {
        let e = ConnectorError::Store(crate::store::StoreError::Closed);
        assert!(!e.json(false).contains("shutting"), "{}", e.json(false));
        assert_eq!(e.status(), 500);
    }
}
