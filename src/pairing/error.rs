//! Pairing errors and the one place they become JSON error bodies, HTTP statuses and WebSocket
//! close codes. Internal detail (store or CA messages) is logged, never sent.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The one answer for a code that is wrong, expired, used or killed: which one is not told.
pub const INVALID_CODE: &str = "the setup code is not valid: wrong, expired or already used";

#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the body is over {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    BadPosId(&'static str),
    #[error("{0}")]
    BadCsr(String),
    #[error("{INVALID_CODE}")]
    InvalidCode,
    #[error("too many failed attempts from this address; retry in {0} s")]
    TooManyAttempts(u64),
    #[error("this needs a client certificate from the pairing CA")]
    NeedsCertificate,
    #[error("pairing is served over TLS only")]
    NeedsTls,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::store::StoreError> for PairingError {
    fn from(e: crate::store::StoreError) -> Self {
        PairingError::Internal(format!("store: {e}"))
    }
}

impl From<super::ca::CaError> for PairingError {
    fn from(e: super::ca::CaError) -> Self {
        PairingError::Internal(format!("CA: {e}"))
    }
}

impl PairingError {
    pub fn status(&self) -> StatusCode {
        match self {
            PairingError::BadRequest(_) | PairingError::BadPosId(_) | PairingError::BadCsr(_) => {
                StatusCode::BAD_REQUEST
            }
            PairingError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            PairingError::InvalidCode | PairingError::NeedsTls => StatusCode::FORBIDDEN,
            PairingError::TooManyAttempts(_) => StatusCode::TOO_MANY_REQUESTS,
            PairingError::NeedsCertificate | PairingError::Unauthorized(_) => {
                StatusCode::UNAUTHORIZED
            }
            PairingError::NotFound => StatusCode::NOT_FOUND,
            PairingError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            PairingError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the JSON body; also the metrics reason.
    pub fn code(&self) -> &'static str {
        match self {
            PairingError::BadRequest(_) => "invalid_request",
            PairingError::TooLarge(_) => "body_too_large",
            PairingError::BadPosId(_) => "invalid_pos_id",
            PairingError::BadCsr(_) => "invalid_csr",
            PairingError::InvalidCode => "invalid_setup_code",
            PairingError::TooManyAttempts(_) => "too_many_attempts",
            PairingError::NeedsCertificate => "certificate_required",
            PairingError::NeedsTls => "tls_required",
            PairingError::Unauthorized(_) => "unauthorized",
            PairingError::NotFound => "not_found",
            PairingError::MethodNotAllowed => "method_not_allowed",
            PairingError::Internal(_) => "internal_error",
        }
    }

    /// What the client reads: the message, except for internal errors.
    pub fn message(&self) -> String {
        match self {
            PairingError::Internal(_) => "internal error; details are in the server log".into(),
            e => e.to_string(),
        }
    }

    /// The JSON body: `{"error": code, "message": text}`.
    pub fn json(&self) -> String {
        serde_json::json!({ "error": self.code(), "message": self.message() }).to_string()
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        if let PairingError::Internal(detail) = self {
            tracing::error!(error = %detail, "pairing request failed");
        } else {
            tracing::debug!(error = self.code(), "pairing request refused");
        }
        let mut r = json_response(self.status(), self.json());
        if let PairingError::TooManyAttempts(secs) = self {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(*secs));
        }
        r
    }

    /// The WebSocket close code for this error over WSS: 1008 (policy) for refusals, 1009 for
    /// size, 1011 for our own failures; the reason is the JSON `error` code.
    pub fn close_code(&self) -> u16 {
        match self {
            PairingError::TooLarge(_) => 1009,
            PairingError::Internal(_) => 1011,
            _ => 1008,
        }
    }
}

pub fn json_response(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_never_reaches_the_body_and_429_says_when() {
        let e = PairingError::Internal("sled: /secret/path".into());
        assert!(!e.json().contains("secret"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = PairingError::TooManyAttempts(42).to_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["retry-after"], "42");
        assert!(PairingError::InvalidCode
            .json()
            .contains("invalid_setup_code"));
    }
}
